"""The session a command opens before it runs trials: checked inputs, data, weights, teacher and meter.

`nas run`, `nas finalize` and `nas proxy-check` all need the same things in the same order: the space,
hardware and data checked before any work (a ConfigError names the file), each backbone's starting weights
resolved, the embedded synthetic data generated once, then the frames decoded, the teacher's depth made
ready and the latency meter connected. `Session` does that once, opens the expensive part on first use
(a rerun with nothing left to do loads nothing) and closes the meter whatever happens.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.progress import Progress

from nas.config import Budget, RunConfig
from nas.data.check import require_valid_dataset
from nas.data.dataset import DepthSplit
from nas.data.frames import open_split
from nas.data.layout import list_pairs
from nas.data.synth import synthesize
from nas.errors import ConfigError
from nas.infra.storage import check_writable_folder
from nas.export.tflite_convert import calibration_sample
from nas.hardware import LatencyMeter, load_hardware
from nas.infra.console import err as console
from nas.infra.db import worker_id
from nas.models.pretrained import RANDOM, WeightSource, fallback_line, resolve_weights
from nas.space import SearchSpace, load_space
from nas.teacher.distill import Distillation


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
    check_writable_folder(config.results, "--results")
    space = load_space(config.space)
    devices = load_hardware(config.hardware)
    if config.data is not None:
        require_valid_dataset(config.data)
    check_calibration_set(config, space)
    return space, devices


# Fewer images than this calibrate int8 ranges on too little of the data to mean anything; a user who wants
# a larger set raises `calibration_images`, which is checked against this same floor.
MIN_CALIBRATION_IMAGES = 4


def check_calibration_set(config: RunConfig, space: SearchSpace) -> None:
    """int8 candidates are calibrated on training images: refuse a set too small before any work starts."""
    if "int8" not in space.precisions():
        return
    available = config.synth_train if config.data is None else len(list_pairs(config.data, "train"))
    limit = config.train_budget.train_limit
    available = min(available, limit) if limit else available
    if available < MIN_CALIBRATION_IMAGES:
        where = config.data / "train" if config.data is not None else config.space
        raise ConfigError(where, f"the space allows int8 models, which are calibrated on training images: "
                                 f"{available} available, at least {MIN_CALIBRATION_IMAGES} needed")


@dataclass
class TrialContext:
    """Everything loaded once per worker and shared by its trials (and by `nas finalize`)."""

    config: RunConfig
    space: SearchSpace
    train_frames: DepthSplit  # training split at deployment resolution, memory-mapped
    val_frames: DepthSplit  # validation at deployment resolution: the pruner's and the TFLite score's images
    onnx2tf_sample: np.ndarray  # onnx2tf's own sample-image file, made from our images (it would download one)
    meter: LatencyMeter
    distillation: Distillation | None = None
    encoder_weights: dict[str, WeightSource] = field(default_factory=dict)  # per backbone, checked up front

    def weights_for(self, backbone: str) -> WeightSource:
        """Where `backbone`'s encoder starts from (random when it was not resolved)."""
        return self.encoder_weights.get(backbone, RANDOM)

    @property
    def calibration_images(self) -> np.ndarray:
        """Training frames that calibrate int8 models (uint8, N×H×W×3, deployment resolution)."""
        return np.asarray(self.train_frames.rgb[:self.config.calibration_images])


def encoder_weights(config: RunConfig, backbones: list[str]) -> dict[str, WeightSource]:
    """`config.pretrained` resolved and checked for `backbones` before any work starts (ConfigError names a bad
    file); says in one line which encoders start from random weights although weights were wanted."""
    sources = resolve_weights(config.pretrained, backbones)
    if line := fallback_line(config.pretrained, sources):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    return sources


def prepare_context(config: RunConfig, space: SearchSpace, devices: list, budget: Budget | None = None,
                    weights: dict[str, WeightSource] | None = None, fresh_latency: bool = False,
                    busy_wait_s: float = 0.0) -> TrialContext:
    """Decode (once) and open the splits, connect the meter, make the teacher's depth ready.

    `weights`: each backbone's starting weights (`encoder_weights`); None: every encoder starts random.
    `fresh_latency`: time every model anew instead of serving its graph's cached figure (a model to ship).
    `busy_wait_s`: how long the meter waits for a device another runner is timing on (`LatencyMeter`).
    """
    budget = budget or config.train_budget
    deploy_wh = (config.deploy_width, config.deploy_height)
    cache_dir = config.results / "cache" / "frames"
    with console.status("opening data (decoded once into results/cache/frames)"):
        train_frames = open_split(config.data_root, "train", cache_dir, deploy_wh, budget.train_limit)
        val_frames = open_split(config.data_root, "validation", cache_dir, deploy_wh, budget.val_limit)
    meter = LatencyMeter(devices, config.storage_url, config.results, holder=worker_id(),
                         trust_new_host_keys=config.trust_new_host_keys, use_cache=not fresh_latency,
                         busy_wait_s=busy_wait_s, reference_every=config.reference_every,
                         reference_tolerance=config.reference_tolerance)
    distillation = None
    if config.distill:
        from nas.teacher.distill import prepare_distillation  # the teacher's own imports only when distilling

        distillation = prepare_distillation(config.teacher_setting, train_frames, budget)
    return TrialContext(config=config, space=space, train_frames=train_frames, val_frames=val_frames,
                        onnx2tf_sample=calibration_sample(list(np.asarray(val_frames.rgb[:20]))), meter=meter,
                        distillation=distillation, encoder_weights=dict(weights or {}))


class Session:
    """Inputs checked and weights resolved when made; data, teacher and meter opened at the first `context`.

    `backbones`: whose starting weights to resolve (default: every backbone of the space); `weights`: already
    resolved ones instead. `budget`: the training recipe the teacher's cache is made for (default: the
    config's). `fresh_latency`: time every model anew (a model to ship) instead of serving cached figures.
    `busy_wait_s`: how long a device busy with another runner is waited for (a search moves on at once).
    """

    def __init__(self, config: RunConfig, *, backbones: Iterable[str] | None = None,
                 weights: dict[str, WeightSource] | None = None, budget: Budget | None = None,
                 fresh_latency: bool = False, busy_wait_s: float = 0.0):
        self.config = config
        self.space, self.devices = check_inputs(config)
        if weights is None:
            weights = encoder_weights(config, list(self.space.backbones() if backbones is None else backbones))
        self.weights = weights
        self.budget = budget or config.train_budget
        self.fresh_latency = fresh_latency
        self.busy_wait_s = busy_wait_s
        self._context: TrialContext | None = None

    def prepare_data(self) -> Path:
        """The data set's root, the embedded synthetic set generated first where no data set was given."""
        return ensure_synthetic_data(self.config) if self.config.data is None else self.config.data

    @property
    def context(self) -> TrialContext:
        """The frames, teacher and meter every trial of this session shares, opened once."""
        if self._context is None:
            self.prepare_data()
            self._context = prepare_context(self.config, self.space, self.devices, self.budget, self.weights,
                                            fresh_latency=self.fresh_latency, busy_wait_s=self.busy_wait_s)
        return self._context

    def close(self) -> None:
        if self._context is not None:
            self._context.meter.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
