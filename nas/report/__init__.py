"""`nas report`: what a study found and what it cost, as files a person reads without a server.

One module per job: `trials` reads the study, `cost` sums what it spent, `importance` asks Optuna
which parameters moved the score, `figures` draws, `previews` copies images out of the artifact
store, `proxy` shows a `nas proxy-check`, `page` writes the HTML, `write` puts them together. For
`nas finalize`: `depth_previews` draws the one preview (`nas.data.preview`) for any predictor,
`model_page` writes the final model's page.
"""

from nas.report.write import write_study_report

__all__ = ["write_study_report"]
