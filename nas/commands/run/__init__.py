"""`nas run`: create or resume a study and run trials. The search itself is `search.py`, imported when the
command runs so that `nas --help` stays fast."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from nas.commands.options import (Artifacts, BudgetOption, ConfigFile, Data, Hardware, NoDistill, Pretrained, Results,
                                  Storage, StudyName, SustainedS, TrustNewHostKeys)
from nas.config import load_config
from nas.errors import NasRuntimeError
from nas.infra.console import out
from nas.infra.signals import sigterm_as_interrupt
from nas.infra.third_party import route_to_log

def run_cmd(config_file: ConfigFile = None,
        data: Data = None,
        space: Annotated[Optional[Path], typer.Option(help="search-space YAML")] = None,
        hardware: Hardware = None,
        study: StudyName = None, storage: Storage = None,
        trials: Annotated[Optional[int], typer.Option(help="trained trials the study should reach: complete or pruned "
                                                      "while training (failed ones are retried; candidates screened "
                                                      "out by the latency bound do not count)")] = None,
        timeout: Annotated[Optional[float], typer.Option(help="stop starting trials after SECONDS")] = None,
        budget: BudgetOption = None,
        teacher: Annotated[Optional[Path], typer.Option(help="teacher folder (default: trained under results/)")] = None,
        no_distill: NoDistill = False,
        objective: Annotated[Optional[str], typer.Option(help="score | pareto (si-RMSE and latency)")] = None,
        pruner: Annotated[Optional[str], typer.Option(help="none | median | hyperband (on estimated Final Scores)")] = None,
        sampler: Annotated[Optional[str], typer.Option(help="tpe | random")] = None,
        seed: Annotated[Optional[int], typer.Option(
            help="sampler seed of the run that creates the study (default 0); workers that join or resume it draw "
                 "their own")] = None, results: Results = None, artifacts: Artifacts = None,
        enqueue_baselines: Annotated[bool, typer.Option("--enqueue-baselines", metavar="",
                                                        help="start from every seed preset in every precision "
                                                             "(same as --baselines all)")] = False,
        baselines: Annotated[Optional[str], typer.Option(
            help="seed presets to start from: all | none | comma-separated names (default: litedepth)")] = None,
        trust_new_host_keys: TrustNewHostKeys = False,
        pretrained: Pretrained = None,
        max_si_rmse: Annotated[Optional[float], typer.Option(
            help="accuracy floor: trials with a higher TFLite si-RMSE are infeasible (never the best); set when the "
                 "study is created")] = None,
        sustained_top: Annotated[Optional[int], typer.Option(
            help="time a trial again under sustained load when it enters the top N by Final Score (one run of "
                 "--sustained-s per such trial; shown, not scored; default 0: never)")] = None,
        sustained_s: SustainedS = None,
        reference_every: Annotated[Optional[int], typer.Option(
            help="latency measurements between checks that the pool's devices agree on the reference model "
                 "(default 10; 0: no checks)")] = None,
        reference_tolerance: Annotated[Optional[float], typer.Option(
            help="share a device's reference figure may be off its own first one or the pool's median before "
                 "the device is taken out (default 0.10)")] = None) -> None:
    """Create or resume a study and run trials (the embedded default needs no arguments)."""
    from nas.commands.run.search import run_search, standing_line, summary_table
    from nas.trial.study_note import quality_note

    config = load_config(config_file, data=data, space=space, hardware=hardware, study=study, storage=storage,
                         trials=trials, timeout=timeout, budget=budget, teacher=teacher,
                         distill=False if no_distill else None, objective=objective, pruner=pruner, sampler=sampler, seed=seed,
                         results=results, artifacts=artifacts, baselines="all" if enqueue_baselines else _baselines(baselines),
                         trust_new_host_keys=trust_new_host_keys or None, pretrained=pretrained,
                         max_si_rmse=max_si_rmse, sustained_top=sustained_top, sustained_s=sustained_s,
                         reference_every=reference_every, reference_tolerance=reference_tolerance)
    log = route_to_log(config.results / "logs", "run")
    started = datetime.now()  # Optuna stamps trials with naive local time too
    with sigterm_as_interrupt():  # a stopped worker fails its trial with a reason, as on Ctrl-C
        study_obj = run_search(config)
    # Fitted to the terminal, whole figures only; a log file is 200 columns wide (nas.infra.console).
    out.print(summary_table(study_obj, out.width))
    if line := standing_line(study_obj):
        out.print(line, highlight=False, markup=False)
    location = config.artifacts_location
    browse = (f"browse: nas dashboard --storage {config.storage_shown} --results {config.results}"
              + (f" --artifacts {location}\n" if config.artifacts else "\n"))
    if not location.startswith("s3://"):  # optuna-dashboard's own command line reads artifacts from a folder only
        browse += f"   or: optuna-dashboard {config.storage_shown} --artifact-dir {location}\n"
    out.print(f"{browse}"
              f"ship the best: nas finalize --study {config.study} --storage {config.storage_shown}", highlight=False)
    out.print(quality_note(config.budget, config.study, config.data is None).replace("`", ""), highlight=False,
              markup=False)  # what the budget's figures are worth, and how to get a usable model
    if log is not None and log.is_file():
        out.print(f"other programs' output (TensorFlow, LiteRT, Optuna): {log}", highlight=False, markup=False)
    if reason := run_failure(study_obj, started):
        raise NasRuntimeError(None, reason)


def _baselines(text: str | None) -> list[str] | str | None:
    """`--baselines` as the config value: all, none, or a list of preset names."""
    if text is None or text in ("all", "none"):
        return text
    return [name.strip() for name in text.split(",") if name.strip()]


def run_failure(study: Any, since: datetime) -> str | None:
    """Why `nas run` failed when every trial it started failed (so scripts see exit 1), else None."""
    import optuna

    from nas.trial.record import fail_reason_of

    mine = [t for t in study.get_trials(deepcopy=False)
            if t.datetime_start is not None and t.datetime_start >= since]
    if not mine or any(t.state != optuna.trial.TrialState.FAIL for t in mine):
        return None
    last = fail_reason_of(mine[-1], "no reason recorded")
    return f"all {len(mine)} trial(s) of this run failed; last: {last}"
