"""One trial, end to end: sample, build, train briefly, export, score the TFLite model, time it.

The same deploy-and-score sequence serves `nas finalize`, so a trial's figures and a final model's
mean the same thing.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.artifacts import upload_artifact
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from .arch import ArchError
from .config import Budget, RunConfig
from .data.dataset import DepthSplit
from .evaluate import evaluate_tflite, write_preview
from .export.onnx_export import check_onnx_parity, export_onnx
from .export.tflite_convert import check_tflite_parity, convert_to_tflite
from .hardware import LatencyMeter
from .metrics import final_score
from .models import DepthNet, count_macs, count_params
from .space import SearchSpace
from .train.distill import Distillation
from .train.loop import supervised, train

console = Console(stderr=True)


@dataclass
class SearchContext:
    """Everything loaded once per worker and shared by its trials."""

    config: RunConfig
    space: SearchSpace
    train_split: DepthSplit  # at training resolution
    val_small: DepthSplit  # validation at training resolution, for pruning reports
    val_deploy: DepthSplit  # validation at deployment resolution, for the TFLite score
    calibration: np.ndarray  # onnx2tf sample images, made from our own data
    meter: LatencyMeter
    distillation: Distillation | None = None


@dataclass
class Deployed:
    """A model exported, scored on validation data, and timed on the device."""

    onnx_path: Path
    tflite_path: Path
    preview_path: Path
    metrics: dict[str, float]
    latency: Any  # nas.hardware.LatencyResult
    score: float
    parity: dict[str, float]
    stage_seconds: dict[str, float] = field(default_factory=dict)


def _training_progress(label: str) -> tuple[Progress, Callable[[int, int, float], None]]:
    progress = Progress(TextColumn(label), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
                        TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(), console=console,
                        transient=True)
    task = progress.add_task(label, total=1, loss=float("nan"))

    def update(step: int, total: int, loss: float) -> None:
        progress.update(task, completed=step, total=total, loss=loss)

    return progress, update


def train_model(ctx: SearchContext, model, budget: Budget, label: str, seed: int, distill_lambda: float | None,
                on_eval=None):
    """Train with distillation when the context has a teacher and lambda > 0."""
    loss_fn, extra = supervised, None
    if ctx.distillation is not None and distill_lambda:
        loss_fn, extra = ctx.distillation.make_loss(distill_lambda), {"teacher": ctx.distillation.maps}
    progress, update = _training_progress(label)
    with progress:
        return train(model, ctx.train_split, budget, val_split=ctx.val_small, extra_maps=extra, loss_fn=loss_fn,
                     seed=seed, on_eval=on_eval, progress=update)


def deploy_and_score(ctx: SearchContext, model, workdir: Path, label: str) -> Deployed:
    """Export to ONNX and TFLite (checking parity), score the TFLite model, time it on the device."""
    cfg = ctx.config
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    model = model.cpu().eval()
    sample = ctx.val_deploy.rgb[:1].transpose(0, 3, 1, 2).astype(np.float32)
    console.print(f"{label}: exporting to ONNX and TFLite")
    onnx_path = export_onnx(model, workdir / "model.onnx", cfg.deploy_height, cfg.deploy_width)
    parity = {"onnx_vs_torch": check_onnx_parity(model, onnx_path, sample, cfg.parity_tolerance,
                                                       cfg.parity_rtol)}
    tflite_path = convert_to_tflite(onnx_path, workdir / "model.tflite", ctx.calibration,
                                    log_path=workdir / "onnx2tf.log")
    parity["tflite_vs_onnx"] = check_tflite_parity(tflite_path, onnx_path, sample, cfg.parity_tolerance,
                                                   cfg.parity_rtol)
    seconds["export"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    console.print(f"{label}: scoring the TFLite model on {len(ctx.val_deploy)} validation images "
                  f"at {cfg.deploy_width}×{cfg.deploy_height}")
    metrics, first_pred = evaluate_tflite(tflite_path, ctx.val_deploy)
    preview = write_preview(workdir / "preview.png", ctx.val_deploy.rgb[0], ctx.val_deploy.depth_mm[0], first_pred)
    seconds["evaluate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    latency = ctx.meter.measure(tflite_path, progress=lambda msg: console.print(f"{label}: {msg}"))
    seconds["measure"] = time.perf_counter() - t0
    score = final_score(metrics["si_rmse"], latency.median_ms / 1000.0, alpha=cfg.score_alpha, c=cfg.score_c)
    return Deployed(onnx_path, tflite_path, preview, metrics, latency, score, parity, seconds)


class TrialObjective:
    """The Optuna objective: returns the Final Score (or (si_rmse, latency_ms) for a Pareto search)."""

    def __init__(self, ctx: SearchContext, store):
        self.ctx = ctx
        self.store = store

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        try:
            return self._run(trial)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:  # Optuna marks the trial failed; say why in the record
            trial.set_user_attr("fail_reason", "interrupted by the user")
            raise
        except Exception as exc:  # recorded with its reason; optimize(catch=...) keeps the study going
            trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}"[:2000])
            console.print(f"[red]trial {trial.number} failed[/red]: {type(exc).__name__}: {exc}")
            raise

    def _run(self, trial: optuna.Trial) -> float | tuple[float, float]:
        ctx, cfg = self.ctx, self.ctx.config
        label = f"trial {trial.number}"
        try:
            arch, training = ctx.space.sample(trial)
        except ArchError as exc:
            trial.set_user_attr("fail_reason", f"arch cannot be built: {exc}")
            raise optuna.TrialPruned(f"arch cannot be built: {exc}") from None
        trial.set_user_attr("arch", arch.to_dict())
        trial.set_user_attr("arch_id", arch.arch_id)
        model = DepthNet(arch)
        trial.set_user_attr("params", count_params(model))
        trial.set_user_attr("macs", count_macs(model, cfg.deploy_height, cfg.deploy_width))
        distill_lambda = float(training.get("distill_lambda", cfg.distill_lambda)) if cfg.distill else 0.0
        if ctx.distillation is not None and distill_lambda:
            trial.set_user_attr("distill", {**ctx.distillation.record, "lambda": distill_lambda})
        console.print(f"{label}: {arch.backbone}, depth {arch.depth}, decoder {list(arch.decoder_channels)}, "
                      f"skips {list(arch.skips)}, blocks {list(arch.blocks)}, {arch.upsample}, "
                      f"scale {arch.input_scale}")

        def report(step: int, val_si_rmse: float) -> bool:
            trial.report(val_si_rmse, step)
            trial.set_user_attr("train_val_si_rmse", val_si_rmse)
            if trial.should_prune():
                trial.set_user_attr("fail_reason", f"pruned at step {step}: validation si-RMSE {val_si_rmse:.4f}")
                return True
            return False

        budget = cfg.train_budget
        result = train_model(ctx, model, budget, f"{label} training", cfg.seed + trial.number, distill_lambda,
                             on_eval=report)
        stage_seconds = {"train": result.seconds}
        trial.set_user_attr("stage_seconds", stage_seconds)
        if result.stopped_early:
            raise optuna.TrialPruned(trial.user_attrs.get("fail_reason", "pruned"))

        with tempfile.TemporaryDirectory(prefix=f"nas-trial-{trial.number}-") as tmp:
            workdir = Path(tmp)
            deployed = deploy_and_score(ctx, model, workdir, label)
            stage_seconds.update(deployed.stage_seconds)
            lat = deployed.latency
            attrs = {**deployed.metrics, "latency_ms": lat.median_ms, "latency_p90_ms": lat.p90_ms,
                     "latency_std_ms": lat.std_ms, "device": lat.device, "threads": lat.threads,
                     "tflite_sha256": lat.tflite_sha256, "measure_start": lat.measure_start,
                     "measure_end": lat.measure_end, "throttled": lat.throttled,
                     "tflite_bytes": deployed.tflite_path.stat().st_size, "parity": deployed.parity,
                     "stage_seconds": {k: round(v, 3) for k, v in stage_seconds.items()},
                     "final_score": deployed.score, "latency": lat.as_record()}
            for key, value in attrs.items():
                trial.set_user_attr(key, value)
            arch_json = workdir / f"arch-{arch.arch_id}.json"
            arch_json.write_text(json.dumps(arch.to_dict(), indent=2))
            for path in (deployed.tflite_path, deployed.preview_path, arch_json):
                upload_artifact(artifact_store=self.store, file_path=str(path), study_or_trial=trial)
        console.print(f"{label}: si-RMSE {deployed.metrics['si_rmse']:.4f}, RMSE {deployed.metrics['rmse']:.3f} m, "
                      f"{lat.median_ms:.1f} ms on {lat.device} -> score {deployed.score:.3f}")
        if cfg.objective == "pareto":
            return deployed.metrics["si_rmse"], lat.median_ms
        return deployed.score
