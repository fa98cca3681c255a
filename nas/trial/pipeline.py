"""The trial pipeline shared by `nas run` and `nas finalize`: prepare once, train, deploy and score.

A search trial and a final model go through the same steps, so their figures mean the same thing:
train on crops at the deployed pixel scale, export PyTorch → ONNX → TFLite (in the arch's
precision), score the TFLite model on validation frames at deployment resolution, time it on the
device, and turn the result into one `nas.trial.record.TrialRecord`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

import optuna

from nas.arch import Arch
from nas.config import Budget, RunConfig
from nas.infra.console import err as console
from nas.trial.evaluate import evaluate_tflite, write_preview
from nas.export.pipeline import Exported, export_checked
from nas.export.conversion_server import CONVERSIONS
from nas.infra.files import atomic_save, atomic_write_text, sha256_file
from nas.models import count_params
from nas.models.complexity import graph_figures
from nas.models.depthnet import GRAPH_VERSION, DepthNet
from nas.train.batches import PixelScaleBatches, training_crop
from nas.train.loop import EvalCallback, TrainResult, default_device, supervised, train
from nas.trial.record import TrialRecord, arch_of, encoder_weights_of
from nas.trial.session import TrialContext


def graph_key(arch: Arch, config: RunConfig) -> str:
    """What an on-device latency depends on besides the device: architecture (precision included),
    deployment resolution and converter. Device, threads and runtime complete the cache key."""
    from importlib.metadata import version  # not `import onnx2tf`: that would load TensorFlow into this process

    text = (f"{arch.arch_id}|{config.deploy_height}x{config.deploy_width}|onnx2tf {version('onnx2tf')}"
            f"|graph v{GRAPH_VERSION}")
    return "graph-" + hashlib.sha256(text.encode()).hexdigest()[:58]


def _progress(label: str, steps: int | None = None) -> tuple[Progress, Callable[[int, int, float], None]]:
    """The training bar over `steps`; the loss shows from the first step on. Off where the console is not
    interactive (a log file): rich would draw nothing there but still end each bar with an empty line."""
    progress = Progress(TextColumn(label), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
                        TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), console=console,
                        transient=True, disable=not console.is_interactive)
    task = progress.add_task(label, total=steps, loss="")

    def update(step: int, total: int, loss: float) -> None:
        progress.update(task, completed=step, total=total, loss=f"loss {loss:.3f}")

    return progress, update


@contextmanager
def stage_spinner(label: str, stage: str, unit: str = "") -> Iterator[Callable[[int, int], None]]:
    """A spinner with the stage, its steps when told (`update(done, total)`, counted in `unit`) and elapsed
    time, while one deploy stage runs. Transient, and off where the console is not interactive, so a log
    file keeps just the stage lines printed around it."""
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.fields[steps]}"),
                        TimeElapsedColumn(), console=console, transient=True, disable=not console.is_interactive)
    task = progress.add_task(f"{label}: {stage}", total=None, steps="")

    def update(done: int, total: int) -> None:
        progress.update(task, steps=f"{done}/{total} {unit}".rstrip())

    with progress:
        yield update


def initial_network(arch: Arch, encoder_file: str | Path | None, seed: int) -> DepthNet:
    """A candidate's network before training, its random layers drawn from `seed` (the one it trains with):
    a trial starts from the same weights whenever it is built, so a re-training (`nas finalize`,
    `nas proxy-check`) differs from the search's only in what the recipe changes."""
    torch.manual_seed(seed)
    return DepthNet(arch, encoder_file)


def train_candidate(ctx: TrialContext, model: torch.nn.Module, arch: Arch, budget: Budget, label: str, seed: int,
                    distill_lambda: float, on_eval: EvalCallback | None = None) -> TrainResult:
    """Train on crops at the deployed pixel scale, distilling when the context has a teacher and lambda > 0.

    When training runs on a GPU, the worker's conversion server starts now if it is not up, so its one
    import of TensorFlow runs on the idle CPU (`export/conversion_server.py`); a CPU-only worker starts it
    at its first conversion, where a fresh child would have imported anyway.
    """
    if default_device().type != "cpu":
        CONVERSIONS.start()
    frames_hw = tuple(int(s) for s in ctx.train_frames.depth_mm.shape[1:3])
    crop = training_crop(arch.input_scale, (budget.train_height, budget.train_width), frames_hw)
    loss_fn, teacher = supervised, None
    if ctx.distillation is not None and distill_lambda:
        loss_fn, teacher = ctx.distillation.make_loss(distill_lambda), ctx.distillation.maps
    batches = PixelScaleBatches(ctx.train_frames, budget.batch_size, crop, teacher)
    progress, update = _progress(f"{label} training on {crop[1]}×{crop[0]} crops", budget.steps)
    with progress:
        return train(model, batches, budget, val_split=ctx.val_frames, loss_fn=loss_fn, seed=seed, on_eval=on_eval,
                     progress=update)


def export_for(ctx: TrialContext, model: torch.nn.Module, arch: Arch, workdir: Path) -> Exported:
    """`model` exported to ONNX and TFLite into `workdir` in `arch`'s precision at deployment resolution, its
    parity checked with the run's tolerances: the one export a trial's untrained timing and its deployment share."""
    cfg = ctx.config
    sample = np.asarray(ctx.val_frames.rgb[:1]).transpose(0, 3, 1, 2).astype(np.float32)
    return export_checked(model, workdir, sample, ctx.onnx2tf_sample, cfg.deploy_height, cfg.deploy_width,
                          precision=arch.precision,
                          calibration=ctx.calibration_images if arch.precision == "int8" else None,
                          tolerance=cfg.parity_tolerance, rtol=cfg.parity_rtol)


def time_untrained(ctx: TrialContext, model: torch.nn.Module, arch: Arch, label: str) -> Any:
    """Convert the untrained network and time it on the device under its graph key, before any training.

    Latency depends on the graph, not on the weights (`benchmarks/latency_weights.md`), so this is
    the trained model's latency too: the cache serves it to `deploy`. Costs one conversion, against the
    training it saves when the figure shows the candidate cannot win. Returns a LatencyResult.
    """
    console.print(f"{label}: timing the untrained graph ({arch.precision}) before training")
    with tempfile.TemporaryDirectory(prefix="nas-untrained-") as tmp, stage_spinner(label, "time the untrained graph"):
        exported = export_for(ctx, copy.deepcopy(model), arch, Path(tmp))
        return ctx.meter.measure(exported.tflite_path, progress=lambda msg: console.print(f"{label}: {msg}"),
                                 key=graph_key(arch, ctx.config))


@dataclass
class Deployed:
    """A trained model exported, scored on validation frames, and timed on the device."""

    onnx_path: Path
    tflite_path: Path
    preview_path: Path
    metrics: dict[str, float]
    latency: Any  # nas.hardware.LatencyResult
    score: float
    parity: dict[str, Any]
    stage_seconds: dict[str, float] = field(default_factory=dict)
    fp32_metrics: dict[str, float] | None = None  # int8 models: the float32 model of the same conversion
    fp32_path: Path | None = None  # int8 models: that float32 model's file
    int8_worst_layer: dict[str, Any] | None = None  # int8 models over the drift margin: where the error grows most


def sustained_seconds(ctx: TrialContext) -> float:
    """The sustained load a model is timed under: the run's `sustained_s`, else the default of the pool's first
    device (`nas.hardware.profile.default_sustained_s`: 60 s on a device, 10 s on this machine)."""
    from nas.hardware.profile import default_sustained_s

    return ctx.config.sustained_s or default_sustained_s(ctx.meter.devices[0])


def deploy(ctx: TrialContext, model: torch.nn.Module, arch: Arch, workdir: Path, label: str,
           sustained_s: float = 0.0) -> Deployed:
    """Export to ONNX and TFLite (checking parity), score the TFLite model, time it on the device; `sustained_s`
    > 0: the timing also runs it that long under sustained load (`latency.sustained`), afresh. The Final Score
    is the burst figure's either way."""
    cfg = ctx.config
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    console.print(f"{label}: exporting to ONNX and TFLite ({arch.precision})")
    with stage_spinner(label, "export"):
        exported = export_for(ctx, model, arch, workdir)
    onnx_path, tflite_path = exported.onnx_path, exported.tflite_path
    seconds["export"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    console.print(f"{label}: scoring the TFLite model on {len(ctx.val_frames)} validation frames "
                  f"at {cfg.deploy_width}×{cfg.deploy_height}")
    with stage_spinner(label, "evaluate", "frames") as frames:
        metrics, first_pred = evaluate_tflite(tflite_path, ctx.val_frames, progress=frames)
    fp32_metrics = worst_layer = None
    if arch.precision == "int8":
        with stage_spinner(label, "evaluate the float32 twin", "frames") as frames:
            fp32_metrics, _ = evaluate_tflite(exported.fp32_path, ctx.val_frames, progress=frames)
        worst_layer = int8_worst_layer(ctx, metrics["si_rmse"], fp32_metrics["si_rmse"], tflite_path,
                                       exported.fp32_path, label)
    preview = write_preview(workdir / "preview.png", ctx.val_frames.rgb[0], ctx.val_frames.depth_mm[0], first_pred)
    seconds["evaluate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    key = graph_key(arch, cfg) if cfg.latency_key == "graph" else None
    with stage_spinner(label, "measure"):
        latency = ctx.meter.measure(tflite_path, progress=lambda msg: console.print(f"{label}: {msg}"), key=key,
                                    sustained_s=sustained_s)
    seconds["measure"] = time.perf_counter() - t0
    score = cfg.score_rule.score(metrics["si_rmse"], latency.median_ms)
    return Deployed(onnx_path, tflite_path, preview, metrics, latency, score, exported.parity, seconds,
                    fp32_metrics, exported.fp32_path if arch.precision == "int8" else None, worst_layer)


def int8_worst_layer(ctx: TrialContext, si_rmse_int8: float, si_rmse_fp32: float, int8_path: Path, fp32_path: Path,
                     label: str) -> dict[str, Any] | None:
    """The layer where an int8 model's error grows most, when it lost more than `int8_drift_margin` to its float32
    twin: a few seconds of LiteRT with every tensor kept, so each such trial says where its accuracy went."""
    from nas.export.int8_drift import PROBE_IMAGES, drift_exceeds, layer_drift

    if not drift_exceeds(si_rmse_int8, si_rmse_fp32, ctx.config.int8_drift_margin):
        return None
    rows = layer_drift(int8_path, fp32_path, np.asarray(ctx.val_frames.rgb[:PROBE_IMAGES]))
    if not rows:
        return None
    worst = max(rows, key=lambda row: row["growth"])
    console.print(f"{label}: int8 si-RMSE {si_rmse_int8:.4f} against {si_rmse_fp32:.4f} for its float32 twin; the "
                  f"error grows most at {worst['layer']} ({worst['op']}, +{worst['growth']:.4f})", markup=False,
                  soft_wrap=True)
    return worst


def trial_weights_setting(config: RunConfig, trial: optuna.trial.FrozenTrial) -> str | Path:
    """The `pretrained` setting the final training uses: the user's, or else the one the trial started from.

    The final model should start where the search's figures came from; an explicit `--pretrained`
    (anything but the default `auto`) wins.
    """
    recorded = encoder_weights_of(trial)
    if str(config.pretrained) != "auto" or not recorded:
        return config.pretrained
    if recorded.get("source") == "folder" and recorded.get("file"):
        return Path(recorded["file"]).parent
    return {"imagenet": "imagenet", "none": "none"}.get(recorded.get("source"), config.pretrained)


@dataclass
class Retrained:
    """A trial's architecture trained again and deployed as the search deploys: what `nas finalize` ships and
    what `nas proxy-check` compares with the search's figures."""

    arch: Arch
    train: TrainResult
    deployed: Deployed
    record: TrialRecord
    distill_lambda: float


KEPT_RECIPE = "trained.json"  # beside model.pt in a kept-training folder: what it was trained with


def training_recipe(ctx: TrialContext, arch: Arch, budget: Budget, seed: int, encoder: dict[str, Any],
                    distill_lambda: float) -> dict[str, Any]:
    """Everything a trained network depends on: a kept one is reused only when all of it is the same."""
    teacher = ctx.distillation.record if ctx.distillation is not None and distill_lambda else {}
    return {"arch": arch.to_dict(), "budget": budget.model_dump(), "seed": seed, "encoder_weights": encoder,
            "distill_lambda": distill_lambda, "teacher_fingerprint": teacher.get("fingerprint"),
            "teacher_sha256": teacher.get("teacher_sha256"), "graph_version": GRAPH_VERSION}


def kept_training(keep: Path, recipe: dict[str, Any], model: torch.nn.Module, label: str) -> TrainResult | None:
    """The network trained earlier with `recipe`, loaded into `model` from `keep`; None (said why, when there
    was one) when there is none to reuse."""
    try:
        kept = json.loads((keep / KEPT_RECIPE).read_text())
    except (OSError, ValueError):
        return None
    weights = keep / "model.pt"
    why = None
    if kept.get("recipe") != recipe:
        why = "it was trained with another recipe"
    elif not weights.is_file() or sha256_file(weights) != kept.get("sha256"):
        why = "its model.pt is missing or changed"
    else:
        try:
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
            result = TrainResult(**{**kept["result"], "history": [tuple(h) for h in kept["result"]["history"]]})
        except Exception as exc:  # any unreadable file: train again
            why = f"it cannot be loaded ({type(exc).__name__}: {exc})"
    if why is not None:
        console.print(f"{label}: not reusing the network kept in {keep}: {why}; training again", markup=False,
                      soft_wrap=True)
        return None
    console.print(f"{label}: reusing the network trained earlier ({result.steps} steps in {result.seconds:.0f} s), "
                  f"kept in {keep}; delete that folder to train again", markup=False, soft_wrap=True)
    return result


def keep_training(keep: Path, recipe: dict[str, Any], model: torch.nn.Module, result: TrainResult) -> None:
    """The trained network and its recipe into `keep`, model.pt first: a rerun after a later failure resumes."""
    keep.mkdir(parents=True, exist_ok=True)
    weights = atomic_save(keep / "model.pt", lambda f: torch.save(model.state_dict(), f))
    atomic_write_text(keep / KEPT_RECIPE, json.dumps({"recipe": recipe, "sha256": sha256_file(weights),
                                                      "result": dataclasses.asdict(result)}, indent=2))


def retrain(ctx: TrialContext, trial: optuna.trial.FrozenTrial, budget: Budget, out: Path, label: str,
            seed: int, keep: Path | None = None, sustained_s: float = 0.0) -> Retrained:
    """Train `trial`'s architecture afresh with `budget` (its encoder start from `ctx`, its distillation
    lambda) and deploy it into `out` through the shared pipeline, so its figures mean what the trial's mean.

    `keep`: a folder that keeps the trained network and its recipe, so that a rerun after a failure later on
    (the device, the export) reuses it instead of training again; reused when the recipe is the same.
    `sustained_s` > 0: the model is timed under sustained load too (`deploy`)."""
    config = ctx.config
    arch = Arch.from_dict(arch_of(trial))
    source = ctx.weights_for(arch.backbone)
    model = initial_network(arch, source.file, seed)
    figures = {"params": count_params(model), **graph_figures(model, config.deploy_height, config.deploy_width)}
    distill_lambda = float(trial.params.get("distill_lambda", config.distill_lambda)) if config.distill else 0.0
    recipe = training_recipe(ctx, arch, budget, seed, source.record(), distill_lambda)
    result = kept_training(keep, recipe, model, label) if keep is not None else None
    if result is None:
        result = train_candidate(ctx, model, arch, budget, label, seed, distill_lambda)
        if keep is not None:
            keep_training(keep, recipe, model, result)
    atomic_save(out / "model.pt", lambda f: torch.save(model.state_dict(), f))  # kept even if export fails
    deployed = deploy(ctx, model, arch, out, label, sustained_s)
    record = TrialRecord.build(arch, figures, deployed, {"train": result.seconds, **deployed.stage_seconds},
                               source.record())
    return Retrained(arch, result, deployed, record, distill_lambda)
