"""`write_study_report`: read the study once, then write the CSV, figures, previews, summary and page."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import optuna

from nas.config import RunConfig
from nas.infra.files import staged_folder
from nas.infra.storage import check_writable_folder
from nas.trial.record import first_feasible, scored_trials, study_budget, study_floor
from nas.trial.study_note import quality_note
from nas.trial.study import artifact_store, load_study, open_storage
from nas.report.cost import study_cost
from nas.report.devices import device_rows, read_reference
from nas.report.figures import history_figure, importance_figure, pareto_figure, reference_figure
from nas.report.importance import score_importances
from nas.report.page import ReportContent, render_page
from nas.report.previews import copy_previews
from nas.infra.files import atomic_write_text
from nas.report.proxy import proxy_summary
from nas.report.trials import COLUMNS, pareto_front, table_trials, trial_rows


def validation_frame(config: RunConfig) -> tuple[np.ndarray, np.ndarray] | None:
    """The study's first validation frame at deployment resolution, for the previews; None without data."""
    from nas.data.dataset import load_split
    from nas.data.layout import list_pairs

    try:
        if not list_pairs(config.data_root, "validation"):
            return None
        split = load_split(config.data_root, "validation", (config.deploy_width, config.deploy_height), 1)
    except (OSError, ValueError):
        return None
    return split.rgb[0], split.depth_mm[0]


TOP_TRIALS = 10  # rows of the table besides the presets
TOP_PREVIEWS = 5


def _objectives(study: optuna.Study) -> str:
    names = study.metric_names or [f"objective {i}" for i in range(len(study.directions))]
    return ", ".join(f"{n} ({d.name.lower()})" for n, d in zip(names, study.directions))


def write_study_report(config: RunConfig, out: Path | None) -> Path:
    """Write report.html with its PNGs, trials.csv and summary.json of `config.study` into `out`
    (default results/reports/STUDY); returns the folder. The folder is written whole or not at all."""
    study = load_study(config.storage_url, config.study)
    final = out or config.results / "reports" / config.study
    check_writable_folder(final.parent, "--out" if out else "--results")
    with staged_folder(final) as staging:
        _write(config, study, staging)
    return final


def _write(config: RunConfig, study: optuna.Study, out: Path) -> None:
    trials = study.get_trials(deepcopy=False)
    rows = trial_rows(study)
    with open(out / "trials.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)

    scored = scored_trials(trials)
    best = first_feasible(scored)
    floor = study_floor(study)
    content = ReportContent(study_name=config.study, objectives=_objectives(study), storage=config.storage_shown,
                            generated=datetime.now(timezone.utc), trial_count=len(trials), best=best,
                            table=table_trials(scored, TOP_TRIALS), cost=study_cost(trials),
                            preview_trials=scored[:TOP_PREVIEWS], proxy_check=proxy_summary(study),
                            max_si_rmse=floor,
                            quality=quality_note(study_budget(study) or config.budget, config.study,
                                                 config.data is None))
    content.pareto = pareto_figure(scored, best, out / "pareto.png", f"study {config.study}",
                                   rule=config.score_rule, max_si_rmse=floor)
    if scored:
        content.pareto_png = "pareto.png"
        started = min(t.datetime_start for t in trials if t.datetime_start is not None)
        history_figure(scored, started, out / "history.png")
        content.history_png = "history.png"
    content.importances, content.importance_reason = score_importances(study, scored)
    content.importance_trials = len(scored)
    if content.importances:
        importance_figure(content.importances, out / "importances.png")
        content.importance_png = "importances.png"
    figures, windows = read_reference(config.storage_url)
    content.devices = device_rows(scored, windows)
    content.reference_count, content.flagged_windows = len(figures), len(windows)
    content.reference_out = sum(f.verdict != "ok" for f in figures)
    if figures:
        reference_figure(figures, out / "reference.png")
        content.reference_png = "reference.png"
    store = artifact_store(config, create=False)
    shown = list({t.number: t for t in content.table + content.preview_trials}.values())
    content.previews = copy_previews(shown, open_storage(config.storage_url, heartbeat=False), store, out,
                                     validation_frame(config))
    atomic_write_text(out / "report.html", render_page(content))

    front = pareto_front(scored)
    best_row = next((r for r in rows if best is not None and r["number"] == best.number), None)
    summary = {"study": config.study, "trials": len(rows), "states": content.cost.states, "best": best_row,
               "max_si_rmse": floor,
               "pareto_front_trials": [n for _, _, n in front], "importances": content.importances,
               "devices": [asdict(d) for d in content.devices],
               "report": "report.html"}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str))
