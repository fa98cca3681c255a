"""`nas run`: check every input, load data once, then let Optuna run trials until the target count."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import optuna
from rich.progress import Progress
from rich.table import Table

from .config import RunConfig
from .data.check import check_dataset
from .data.dataset import load_split
from .data.synth import synthesize
from .errors import ConfigError
from .export.tflite_convert import calibration_sample
from .hardware import LatencyMeter, load_hardware
from .objective import SearchContext, TrialObjective, console
from .presets import PRESETS
from .space import SearchSpace, load_space
from .study import COUNTED_STATES, artifact_store, finished_count, open_study

SYNTH_MARKER = ".synthetic.json"


class DataError(ConfigError):
    """A data set that fails the check; `problems` lists every bad file."""

    def __init__(self, root: Path, problems: list):
        self.problems = problems
        super().__init__(root, f"{len(problems)} problem(s) in the data set, first: {problems[0]}")


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
                   width=config.deploy_width, height=config.deploy_height,
                   progress=lambda done, total: progress.update(task, completed=done))
    marker.write_text(json.dumps(recipe))
    return root


def check_inputs(config: RunConfig) -> tuple[SearchSpace, list]:
    """Space, hardware and data, each checked; a ConfigError names the file before any work starts."""
    space = load_space(config.space)
    devices = load_hardware(config.hardware)
    if config.data is not None:
        problems = check_dataset(config.data)
        if problems:
            raise DataError(config.data, problems)
    return space, devices


def build_context(config: RunConfig, space: SearchSpace, devices: list) -> SearchContext:
    root = config.data_root
    budget = config.train_budget
    train_wh = (budget.train_width, budget.train_height)
    with console.status("loading data"):
        train_split = load_split(root, "train", train_wh, budget.train_limit)
        val_small = load_split(root, "validation", train_wh, budget.val_limit)
        val_deploy = load_split(root, "validation", (config.deploy_width, config.deploy_height), budget.val_limit)
    holder = f"{socket.gethostname()}:{os.getpid()}"
    meter = LatencyMeter(devices, config.storage_url, config.results, holder=holder,
                         trust_new_host_keys=config.trust_new_host_keys)
    distillation = None
    if config.distill:
        from .train.distill import prepare_distillation

        distillation = prepare_distillation(config, train_split)
    return SearchContext(config=config, space=space, train_split=train_split, val_small=val_small,
                         val_deploy=val_deploy, calibration=calibration_sample(list(val_deploy.rgb[:20])),
                         meter=meter, distillation=distillation)


def enqueue_baselines(study: optuna.Study, space: SearchSpace) -> int:
    """Enqueue each seed preset that lies in the space and is not in the study yet."""
    trials = study.get_trials(deepcopy=False)
    seen_archs = {t.user_attrs.get("arch_id") for t in trials}
    seen_presets = {t.user_attrs.get("preset") for t in trials}
    count = 0
    for name, arch in PRESETS.items():
        if arch.arch_id in seen_archs or name in seen_presets:
            continue
        if problems := space.violations(arch):
            console.print(f"[yellow]preset {name} is not a point of this space ({problems[0]}); skipped[/yellow]")
            continue
        study.enqueue_trial(arch.to_params(), user_attrs={"preset": name}, skip_if_exists=True)
        count += 1
    return count


def run_search(config: RunConfig) -> optuna.Study:
    """Create or resume the study and run trials until `config.trials` have finished."""
    space, devices = check_inputs(config)
    config.results.mkdir(parents=True, exist_ok=True)
    if config.data is None:
        ensure_synthetic_data(config)
    try:
        study = open_study(config)
    except ValueError as exc:  # e.g. resuming a study with another objective
        raise ConfigError(None, f"cannot open study {config.study!r} in {config.storage_url}: {exc}") from None
    if config.enqueue_baselines:
        console.print(f"enqueued {enqueue_baselines(study, space)} seed architecture(s)")
    remaining = config.trials - finished_count(study)
    if remaining <= 0:
        console.print(f"study {config.study!r} already has {finished_count(study)} finished trials "
                      f"(target {config.trials}); raise --trials to search further")
        return study
    ctx = build_context(config, space, devices)
    console.print(f"study {config.study!r}: {remaining} trial(s) to run, budget {config.budget}, "
                  f"space {space.name}, device(s) {', '.join(d.name for d in devices)}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(TrialObjective(ctx, artifact_store(config)), n_trials=remaining, timeout=config.timeout,
                   catch=(Exception,), gc_after_trial=True,
                   callbacks=[optuna.study.MaxTrialsCallback(config.trials, states=COUNTED_STATES)])
    return study


def summary_table(study: optuna.Study, top: int = 5) -> Table:
    """The best complete trials with their figures."""
    table = Table(title=f"study {study.study_name}: best trials")
    for column in ("trial", "score", "si-RMSE", "RMSE m", "latency ms", "backbone", "scale", "params", "MMACs"):
        table.add_column(column, justify="right" if column not in ("backbone", "scale") else "left")
    complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    complete.sort(key=lambda t: -t.user_attrs.get("final_score", float("-inf")))
    for t in complete[:top]:
        a = t.user_attrs
        table.add_row(str(t.number), f"{a.get('final_score', float('nan')):.3f}", f"{a.get('si_rmse', np.nan):.4f}",
                      f"{a.get('rmse', np.nan):.3f}", f"{a.get('latency_ms', np.nan):.1f}",
                      a.get("arch", {}).get("backbone", "?"), a.get("arch", {}).get("input_scale", "?"),
                      f"{a.get('params', 0):,}", f"{a.get('macs', 0) / 1e6:,.0f}")
    return table
