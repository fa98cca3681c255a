"""The search behind `nas run`: check every input, load data once, then let Optuna run trials until the target."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import numpy as np
import optuna
from sqlalchemy.exc import SQLAlchemyError
from rich.table import Table
from rich.text import Text

from nas.config import RunConfig
from nas.infra.outage import optimize_through_outages
from nas.infra.storage import check_database
from nas.errors import ConfigError
from nas.infra.console import err as console
from nas.infra.third_party import current_log, verbose
from nas.infra.db import worker_id
from nas.infra.workers import remove_dead_scratch
from nas.trial.objective import TrialObjective
from nas.trial.baselines import enqueue_baselines
from nas.trial.session import Session
from nas.trial.progress import StudyProgress
from nas.trial.record import (arch_of, attrs, best_preset, best_searched, contenders, fail_orphaned_trials,
                              fail_trials_of_dead_workers, worker_of,
                              is_feasible, precision_of, preset_of, score_of, screened_before_training, study_floor,
                              trained_count)
from nas.trial.study import artifact_store, open_study
from nas.trial.study_note import write_study_note

class StopAtTrainedTrials:
    """Stop once the study holds `target` trained trials (complete, or pruned while training).

    Candidates screened out by the latency bound or the space's compute cap cost seconds, so they do not
    use up `--trials`; `max_screened` stops a run whose every candidate is screened out (a space with
    nothing faster, or nothing under its cap), and
    `max_failed` one whose trials keep failing (as many failures as trials were asked of the run).

    With many workers on one study, the trials other workers are running count too: a worker does not
    start a trial the target no longer needs (should one of theirs fail, its worker goes on). Trials of
    dead workers are failed first (this machine's at once, others' by the heartbeat), so they never hold
    the target up. `stopped` says the run stopped here (not for lack of attempts or time), `gave_up` that it
    stopped for too many screened or failed candidates.
    """

    def __init__(self, target: int, max_screened: int, max_failed: int):
        self.target = target
        self.max_screened = max_screened
        self.max_failed = max_failed
        self.screened_this_run = 0
        self.failed_this_run = 0
        self.stopped = self.gave_up = False

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.screened_this_run += screened_before_training(trial)
        self.failed_this_run += trial.state == optuna.trial.TrialState.FAIL
        self.gave_up = self.screened_this_run >= self.max_screened or self.failed_this_run >= self.max_failed
        if trained_count(study) + len(running_elsewhere(study)) >= self.target or self.gave_up:
            self.stopped = True
            study.stop()


def running_elsewhere(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials other workers are running now (called between trials, so none is this worker's).

    Killed workers' trials are failed (and retried) first, not counted: this machine's at once, other
    machines' once their heartbeat is `grace_s` old.
    """
    for dead in fail_trials_of_dead_workers(study):  # a retry is not retried again (max_retry 1)
        again = ("not retried again (it was a retry)"
                 if optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(dead) else "retried once")
        console.print(f"trial {dead.number} failed: its worker {worker_of(dead)} is no longer running; {again}",
                      markup=False)
    optuna.storages.fail_stale_trials(study)
    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))


def wait_for_others(study: optuna.Study, target: int, grace_s: float, poll_s: float,
                    deadline: float | None) -> bool:
    """Whether this worker should run trials: True when the target needs more than the study holds and its
    other workers run; False once the target is reached (or the time is up).

    When only trials running elsewhere stand between the study and its target, wait for them, saying
    so once per trial: a run does not end short of the target while a trial it needs may yet fail.
    """
    told: set[int] = set()
    while True:
        running = running_elsewhere(study)
        trained = trained_count(study)
        if trained >= target:
            return False
        if trained + len(running) < target:
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
        for trial in running:
            if trial.number not in told:
                told.add(trial.number)
                by = (datetime.now() + timedelta(seconds=grace_s)).strftime("%H:%M:%S")
                console.print(f"waiting for trial {trial.number} of worker {worker_of(trial) or '?'}: the target "
                              f"needs it; if that worker is dead, its heartbeat expires by {by} and the trial "
                              "is retried", markup=False)
        time.sleep(poll_s)


def run_search(config: RunConfig) -> optuna.Study:
    """Create or resume the study and run trials until `config.trials` have finished."""
    with Session(config) as session:
        return search(session)


def search(session: Session) -> optuna.Study:
    """The study of `session.config`, opened (or created) and run to its target."""
    config, space, devices = session.config, session.space, session.devices
    check_database(config.storage_url, create=True)  # before the artifact folder: a bad URL leaves nothing behind
    store = artifact_store(config)  # an unreachable bucket is a clear error now, not after the first training
    config.results.mkdir(parents=True, exist_ok=True)
    try:
        study = open_study(config)
    except ValueError as exc:  # e.g. resuming a study with another objective
        raise ConfigError(None, f"cannot open study {config.study!r} in {config.storage_shown}: {exc}") from None
    except SQLAlchemyError as exc:  # unreachable server, wrong credentials, no such database
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise ConfigError(None, f"cannot reach the study database {config.storage_shown}: {reason}") from None
    if conflicts := space.conflicts(study.get_trials(deepcopy=False)):
        raise ConfigError(config.space, f"study {config.study!r} was sampled from other choices ("
                          + "; ".join(conflicts) + "): Optuna cannot change a parameter's choices within a study, "
                          "so every new trial would fail. Run the new space under another --study name, or "
                          "resume this study with the space it was started with")
    if removed := remove_dead_scratch():
        console.print(f"removed {len(removed)} scratch folder(s) of killed workers from {removed[0].parent}",
                      markup=False)
    session.prepare_data()
    write_study_note(study, config, space, devices)
    if config.baselines != "none":
        if count := enqueue_baselines(study, space, None if config.baselines == "all" else config.baselines):
            console.print(f"enqueued {count} seed architecture(s) to start from")
    remaining = config.trials - trained_count(study)
    if remaining <= 0:
        console.print(f"study {config.study!r} already has {trained_count(study)} finished trials "
                      f"(target {config.trials}); raise --trials to search further")
        return study
    if config.objective == "pareto" and config.pruner != "none":
        console.print("pruning is off for --objective pareto (Optuna cannot prune multi-objective studies); "
                      "the latency screen is off too, so the whole front is kept")
    ctx = session.context
    timing = ""
    if config.times_before_training:
        timing = (", each new graph timed before training" if config.time_before_training is True
                  else ", new graphs timed before training where the predicted latency leaves the screen open")
    console.print(f"study {config.study!r}: {remaining} trial(s) to run, budget {config.budget}, "
                  f"space {space.name}, device(s) {', '.join(d.name for d in devices)}{timing}")
    if current_log() is None and not verbose():  # no log file to keep them: Optuna's per-trial lines stay off
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    max_screened = config.screened_limit
    stopper = StopAtTrainedTrials(config.trials, max_screened=max_screened, max_failed=remaining)
    progress = StudyProgress(config.trials)
    objective = TrialObjective(ctx, store, progress)

    def optimize(timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        poll_s = min(5.0, float(config.heartbeat_s))
        while wait_for_others(study, config.trials, config.grace_s, poll_s, deadline):
            # n_trials bounds the attempts of this run: failed trials use it up too, so a broken device ends it.
            attempts = config.trials - trained_count(study) + max_screened
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            stopper.stopped = False
            study.optimize(objective, n_trials=attempts, timeout=left, catch=(Exception,), gc_after_trial=True,
                           callbacks=[stopper, progress])
            if not stopper.stopped or stopper.gave_up:  # out of attempts or time, or too many failures
                return

    me = worker_id()
    optimize_through_outages(optimize, lambda reason: fail_orphaned_trials(study, me, reason), config.storage_url,
                             config.storage_shown, config.outage_s, config.timeout)
    return study


# The closing table's columns in the order shown, and the order a narrow terminal drops them in: the least
# telling first. trial, score, si-RMSE and latency always stay; below their width the rows are stacked instead.
SUMMARY_COLUMNS = ("trial", "score", "si-RMSE", "RMSE m", "latency ms", "precision", "backbone", "scale", "params",
                   "MMACs", "preset")
DROPPED_FIRST = ("MMACs", "params", "scale", "RMSE m", "precision", "preset", "backbone")
LEFT_ALIGNED = ("precision", "backbone", "scale", "preset")


def summary_rows(study: optuna.Study, top: int = 5) -> list[dict[str, str]]:
    """The closing table's rows as text, column name -> cell: the best complete trials (the Pareto front's, for a
    Pareto study) that meet the study's accuracy floor, and the best seed preset."""
    shown = contenders(study)[:top]
    if (preset := best_preset(study)) is not None and preset.number not in {t.number for t in shown}:
        shown.append(preset)
    rows = []
    for t in shown:
        a, arch = attrs(t), arch_of(t)
        cells = (str(t.number), f"{a.get('final_score', float('nan')):.3f}", f"{a.get('si_rmse', np.nan):.4f}",
                 f"{a.get('rmse', np.nan):.3f}", f"{a.get('latency_ms', np.nan):.1f}", precision_of(t),
                 arch.get("backbone", "?"), arch.get("input_scale", "?"), f"{a.get('params', 0):,}",
                 f"{a.get('macs', 0) / 1e6:,.0f}", a.get("preset", ""))
        rows.append(dict(zip(SUMMARY_COLUMNS, cells)))
    return rows


def table_width(columns: list[str], rows: list[dict[str, str]]) -> int:
    """The width rich gives a table of these columns with its default box: each column as wide as its widest
    cell or header, one space of padding on each side, one rule between columns and at both edges."""
    cells = sum(max([len(c)] + [len(r[c]) for r in rows]) for c in columns)
    return cells + 3 * len(columns) + 1


def summary_table(study: optuna.Study, width: int | None = None, top: int = 5) -> Table | Text:
    """The best trials that meet the study's accuracy floor, and the best seed preset, fitted to `width` columns
    (None: no limit). A figure is never cut: a narrow terminal drops the least telling columns first (the caption
    names them), and one too narrow for trial, score, si-RMSE and latency gets one stacked entry per trial."""
    floor = study_floor(study)
    title = f"study {study.study_name}: best trials" + (f" with si-RMSE ≤ {floor:g}" if floor is not None else "")
    rows = summary_rows(study, top)
    columns = list(SUMMARY_COLUMNS)
    dropped: list[str] = []
    for name in DROPPED_FIRST:
        if width is None or table_width(columns, rows) <= width:
            break
        columns.remove(name)
        dropped.append(name)
    notes = []
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if infeasible := sum(1 for t in complete if not is_feasible(t)):
        notes.append(f"{infeasible} complete trial(s) above max_si_rmse {floor:g} are not ranked")
    if width is not None and table_width(columns, rows) > width:
        return stacked_summary(title, rows, notes)
    if dropped:
        notes.append(f"not shown at {width} columns: {', '.join(reversed(dropped))}")
    table = Table(title=title, expand=False)
    for column in columns:
        table.add_column(column, justify="left" if column in LEFT_ALIGNED else "right", no_wrap=True)
    for row in rows:
        table.add_row(*(row[c] for c in columns))
    if notes:
        table.caption = "; ".join(notes)
    return table


def stacked_summary(title: str, rows: list[dict[str, str]], notes: list[str]) -> Text:
    """The closing table as one entry per trial, for a terminal too narrow for its columns: lines break between
    figures, never inside one."""
    lines = [title]
    for row in rows:
        figures = [f"{name} {row[name]}" for name in SUMMARY_COLUMNS[1:] if row[name]]
        lines.append(f"trial {row['trial']}: " + ", ".join(figures))
    return Text("\n".join(lines + notes))


def standing_line(study: optuna.Study) -> str | None:
    """Where the search's best trial stands against the best seed preset, when the study has both (with an
    accuracy floor: the best of those that meet it)."""
    s, p = best_searched(study), best_preset(study)
    if s is None or p is None:
        return None
    ratio = score_of(s) / score_of(p)
    floor = study_floor(study)
    within = f" (both within max_si_rmse {floor:g})" if floor is not None else ""
    return (f"best searched trial {s.number} scores {score_of(s):.3f}, the best seed preset "
            f"({preset_of(p)}, trial {p.number}) {score_of(p):.3f}: {ratio:.2f}×{within}")
