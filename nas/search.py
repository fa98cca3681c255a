"""`nas run`: check every input, load data once, then let Optuna run trials until the target count."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import optuna
from sqlalchemy.exc import SQLAlchemyError
from rich.progress import Progress
from rich.table import Table

from .config import RunConfig
from .data.check import require_valid_dataset
from .data.layout import list_pairs
from .data.synth import synthesize
from .db_outage import optimize_through_outages
from .errors import ConfigError
from .arch import Arch
from .console import err as console
from .hardware import load_hardware
from .objective import TrialObjective
from .pipeline import encoder_weights, prepare_context
from .progress import StudyProgress
from .presets import PRESETS
from .space import SearchSpace, load_space
from .study import FLOOR_ATTR, artifact_store, is_feasible, open_study, trained_count
from .study_note import write_study_note

SYNTH_MARKER = ".synthetic.json"


def ensure_synthetic_data(config: RunConfig) -> Path:
    """The embedded default data: generated once under results/, reused while its recipe is unchanged."""
    root = config.results / "data"
    recipe = {"train": config.synth_train, "validation": config.synth_val, "test": config.synth_test,
              "seed": config.synth_seed, "width": config.deploy_width, "height": config.deploy_height}
    marker = root / SYNTH_MARKER
    if marker.is_file() and json.loads(marker.read_text()) == recipe:
        return root
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("generating synthetic scenes", total=sum(recipe[s] for s in ("train", "validation", "test")))
        synthesize(root, {s: recipe[s] for s in ("train", "validation", "test")}, seed=config.synth_seed,
                   width=config.deploy_width, height=config.deploy_height, workers=os.cpu_count() or 1,
                   progress=lambda done, total: progress.update(task, completed=done))
    marker.write_text(json.dumps(recipe))
    return root


def check_inputs(config: RunConfig) -> tuple[SearchSpace, list]:
    """Space, hardware and data, each checked; a ConfigError names the file before any work starts."""
    space = load_space(config.space)
    devices = load_hardware(config.hardware)
    if config.data is not None:
        require_valid_dataset(config.data)
    check_calibration_set(config, space)
    return space, devices


MIN_CALIBRATION_IMAGES = 4


def check_calibration_set(config: RunConfig, space: SearchSpace) -> None:
    """int8 candidates are calibrated on training images: refuse a set too small before any work starts."""
    precision = next((p for p in space.params if p.name == "precision"), None)
    if precision is None or "int8" not in (precision.choices or ()):
        return
    available = config.synth_train if config.data is None else len(list_pairs(config.data, "train"))
    limit = config.train_budget.train_limit
    available = min(available, limit) if limit else available
    if available < MIN_CALIBRATION_IMAGES:
        where = config.data / "train" if config.data is not None else config.space
        raise ConfigError(where, f"the space allows int8 models, which are calibrated on training images: "
                                 f"{available} available, at least {MIN_CALIBRATION_IMAGES} needed")


def preset_points(space: SearchSpace) -> dict[str, Arch]:
    """Every seed preset in every precision the space offers, named `preset` or `preset-int8`."""
    precision = next((p for p in space.params if p.name == "precision"), None)
    precisions = list(precision.choices) if precision is not None and precision.choices else ["fp32"]
    points = {}
    for name, arch in PRESETS.items():
        for p in precisions:
            points[name if p == "fp32" else f"{name}-{p}"] = dataclasses.replace(arch, precision=p)
    return points


def enqueue_baselines(study: optuna.Study, space: SearchSpace, names: list[str] | None = None) -> int:
    """Enqueue seed presets that lie in the space and are not in the study yet; how many were enqueued.

    `names` None: every preset in every precision of the space, in `PRESETS` order, cheapest first
    (fewest MACs at 640×480), so that once the cheap ones are timed the latency screen can skip the
    presets that cannot beat them; a preset outside the space is then skipped with a line saying so.
    Named presets run in the order given; one outside the space is skipped silently.
    """
    trials = study.get_trials(deepcopy=False)
    seen_archs = {t.user_attrs.get("arch_id") for t in trials}
    seen_presets = {t.user_attrs.get("preset") for t in trials}
    points = preset_points(space)
    wanted = list(points) if names is None else [n for n in names if n in points]
    count = 0
    for name in wanted:
        arch = points[name]
        if arch.arch_id in seen_archs or name in seen_presets:
            continue
        if problems := space.violations(arch):
            if names is None:
                console.print(f"preset {name} is not a point of this space ({problems[0]}); skipped", markup=False)
            continue
        study.enqueue_trial(arch.to_params(), user_attrs={"preset": name}, skip_if_exists=True)
        count += 1
    return count


class StopAtTrainedTrials:
    """Stop once the study holds `target` trained trials (complete, or pruned while training).

    Candidates screened out by the latency bound or the space's compute cap cost seconds, so they do not
    use up `--trials`; `max_screened` stops a run whose every candidate is screened out (a space with
    nothing faster, or nothing under its cap), and
    `max_failed` one whose trials keep failing (as many failures as trials were asked of the run).

    With many workers on one study, the trials other workers are running count too: a worker does not
    start a trial the target no longer needs (should one of theirs fail, its worker goes on). Trials of
    dead workers are failed first (heartbeat), so they never hold the target up.
    """

    def __init__(self, target: int, max_screened: int, max_failed: int):
        self.target = target
        self.max_screened = max_screened
        self.max_failed = max_failed
        self.screened_this_run = 0
        self.failed_this_run = 0

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.screened_this_run += bool(trial.user_attrs.get("pruned_before_training"))
        self.failed_this_run += trial.state == optuna.trial.TrialState.FAIL
        if (trained_count(study) + running_elsewhere(study) >= self.target
                or self.screened_this_run >= self.max_screened or self.failed_this_run >= self.max_failed):
            study.stop()


def running_elsewhere(study: optuna.Study) -> int:
    """Trials other workers are running now (called between trials, so none is this worker's)."""
    optuna.storages.fail_stale_trials(study)  # a killed worker's trial is failed (and retried), not counted
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))


def run_search(config: RunConfig) -> optuna.Study:
    """Create or resume the study and run trials until `config.trials` have finished."""
    space, devices = check_inputs(config)
    weights = encoder_weights(config, list(space.backbones()))
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
    if config.data is None:
        ensure_synthetic_data(config)
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
    ctx = prepare_context(config, space, devices, weights=weights)
    timing = ""
    if config.times_before_training:
        timing = (", each new graph timed before training" if config.time_before_training is True
                  else ", new graphs timed before training where the predicted latency leaves the screen open")
    console.print(f"study {config.study!r}: {remaining} trial(s) to run, budget {config.budget}, "
                  f"space {space.name}, device(s) {', '.join(d.name for d in devices)}{timing}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Generous: random sampling of the mission space meets its compute cap about once in 30 draws (a second
    # or less each); TPE learns the cap within its first few dozen.
    max_screened = max(200, 40 * config.trials)
    stopper = StopAtTrainedTrials(config.trials, max_screened=max_screened, max_failed=remaining)
    progress = StudyProgress(config.trials)
    objective = TrialObjective(ctx, store, progress)

    def optimize(timeout: float | None) -> None:
        # n_trials bounds the attempts of this run: failed trials use it up too, so a broken device ends the run.
        attempts = config.trials - trained_count(study) + max_screened
        study.optimize(objective, n_trials=attempts, timeout=timeout, catch=(Exception,), gc_after_trial=True,
                       callbacks=[stopper, progress])

    try:
        optimize_through_outages(study, optimize, config.storage_url, config.storage_shown, config.outage_s,
                                 config.timeout)
    finally:
        ctx.meter.close()
    return study


def summary_table(study: optuna.Study, top: int = 5) -> Table:
    """The best complete trials (the Pareto front's, for a Pareto study) that meet the study's accuracy floor,
    and the best seed preset."""
    floor = study.user_attrs.get(FLOOR_ATTR)
    title = f"study {study.study_name}: best trials" + (f" with si-RMSE ≤ {floor:g}" if floor is not None else "")
    table = Table(title=title, expand=False)
    for column in ("trial", "score", "si-RMSE", "RMSE m", "latency ms", "precision", "backbone", "scale", "params",
                   "MMACs", "preset"):
        table.add_column(column, justify="left" if column in ("precision", "backbone", "scale", "preset") else "right",
                         no_wrap=True)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    pool = study.best_trials if len(study.directions) > 1 and complete else [t for t in complete if is_feasible(t)]
    ranked = sorted(pool, key=lambda t: -t.user_attrs.get("final_score", float("-inf")))
    shown = ranked[:top]
    presets = sorted((t for t in complete if t.user_attrs.get("preset") and is_feasible(t)),
                     key=lambda t: -t.user_attrs.get("final_score", float("-inf")))
    if presets and presets[0] not in shown:
        shown.append(presets[0])
    if infeasible := sum(1 for t in complete if not is_feasible(t)):
        table.caption = f"{infeasible} complete trial(s) above max_si_rmse {floor:g} are not ranked"
    for t in shown:
        a = t.user_attrs
        arch = a.get("arch", {})
        table.add_row(str(t.number), f"{a.get('final_score', float('nan')):.3f}", f"{a.get('si_rmse', np.nan):.4f}",
                      f"{a.get('rmse', np.nan):.3f}", f"{a.get('latency_ms', np.nan):.1f}",
                      a.get("precision", arch.get("precision", "fp32")), arch.get("backbone", "?"),
                      arch.get("input_scale", "?"), f"{a.get('params', 0):,}", f"{a.get('macs', 0) / 1e6:,.0f}",
                      a.get("preset", ""))
    return table


def standing_line(study: optuna.Study) -> str | None:
    """Where the search's best trial stands against the best seed preset, when the study has both (with an
    accuracy floor: the best of those that meet it)."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if is_feasible(t)]
    presets = [t for t in complete if t.user_attrs.get("preset")]
    searched = [t for t in complete if not t.user_attrs.get("preset")]
    if not presets or not searched:
        return None

    def best(trials: list) -> optuna.trial.FrozenTrial:
        return max(trials, key=lambda t: t.user_attrs.get("final_score", float("-inf")))

    s, p = best(searched), best(presets)
    ratio = s.user_attrs["final_score"] / p.user_attrs["final_score"]
    floor = study.user_attrs.get(FLOOR_ATTR)
    within = f" (both within max_si_rmse {floor:g})" if floor is not None else ""
    return (f"best searched trial {s.number} scores {s.user_attrs['final_score']:.3f}, the best seed preset "
            f"({p.user_attrs['preset']}, trial {p.number}) {p.user_attrs['final_score']:.3f}: {ratio:.2f}×{within}")
