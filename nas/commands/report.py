"""`nas report`: a study as one HTML page with its figures, trials.csv and summary.json."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nas.commands.options import Artifacts, Results, Storage, StudyName
from nas.config import load_config
from nas.infra.console import out


def report_cmd(study: StudyName = None, storage: Storage = None, results: Results = None, artifacts: Artifacts = None,
               out_dir: Annotated[Optional[Path], typer.Option(
                   "--out", help="report folder (default RESULTS/reports/STUDY)")] = None) -> None:
    """A study as report.html (Pareto front, history, importances, top trials, previews, cost) with its PNGs,
    trials.csv and summary.json."""
    from nas.report import write_study_report

    folder = write_study_report(load_config(None, study=study, storage=storage, results=results, artifacts=artifacts),
                                out_dir)
    out.print(f"report written to {folder}")
