"""`nas teacher train | cache`: parse, call one function in nas.teacher, report one line.

Errors are raised, not printed: `nas.cli.ErrorBoundary` reports them and picks the exit code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nas.config import BUDGETS
from nas.infra.console import out
from nas.data.check import require_valid_dataset
from nas.errors import ConfigError

teacher_app = typer.Typer(help="The distillation teacher: train one, or cache a teacher's depth on a data set.",
                          no_args_is_help=True)

Data = Annotated[Path, typer.Option("--data", help="data set root (MAI 2021 layout)")]
TeacherBudget = Annotated[str, typer.Option(
    help=f"teacher budget: {' | '.join(BUDGETS)} (quick: CPU, minutes; full: GPU, 480×360, 12k steps)")]


def _check_budget(budget: str) -> None:
    """Teacher budgets are named like the student budgets (`nas.config.BUDGETS`) they serve."""
    if budget not in BUDGETS:
        raise ConfigError(None, f"unknown budget {budget!r}; choose from {', '.join(BUDGETS)}")


@teacher_app.command("train")
def train_cmd(data: Data, out_dir: Annotated[Path, typer.Option("--out", help="teacher folder to write")],
              backbone: Annotated[Optional[str], typer.Option(
                  help="timm backbone (default: resnet18 smoke, efficientnet_b0 quick, resnet50 full)")] = None,
              budget: TeacherBudget = "quick",
              init: Annotated[Optional[Path], typer.Option(
                  help="local checkpoint (state dict: whole teacher or backbone, .pt/.pth/.safetensors)")] = None,
              steps: Annotated[Optional[int], typer.Option(help="override the budget's step count")] = None,
              seed: Annotated[int, typer.Option(help="training seed")] = 0,
              pretrained: Annotated[str, typer.Option(
                  help="backbone starting weights: auto (ImageNet where the Hugging Face cache has them) | none | "
                       "imagenet | FOLDER with <backbone>.safetensors or .pth; --init loads on top")] = "auto") -> None:
    """Train a large DepthNet teacher; writes teacher.pt and teacher.json (arch, budget, data fingerprint, metrics)."""
    from nas.teacher import folder_lock, train_teacher

    _check_budget(budget)
    require_valid_dataset(data)
    with folder_lock(out_dir):  # as every writer of a teacher folder: a search distilling from it waits
        spec = train_teacher(data, out_dir, budget, backbone, init, steps, seed, pretrained=pretrained)
    si = (spec.val_metrics or {}).get("si_rmse", float("nan"))
    out.print(f"teacher {spec.label} in {out_dir}: validation si-RMSE {si:.4f}; use it with "
              f"`nas run --teacher {out_dir}`", highlight=False, soft_wrap=True)


TeacherDir = Annotated[Path, typer.Option("--out", help="teacher folder (from `train`, or new with --model)")]
UserModel = Annotated[Optional[Path], typer.Option(
    help="your teacher: TorchScript or ONNX, RGB float 0..255 NCHW -> depth in metres")]
CacheBudget = Annotated[str, typer.Option(
    help=f"student budget ({' | '.join(BUDGETS)}) whose training resolution to cache at")]


@teacher_app.command("cache")
def cache_cmd(data: Data, out_dir: TeacherDir, model: UserModel = None, budget: CacheBudget = "quick") -> None:
    """Run the teacher once over the training split and store its depth (float16), with its validation metrics."""
    from nas.teacher import cache_teacher

    _check_budget(budget)
    require_valid_dataset(data)
    b = BUDGETS[budget]
    cache, spec = cache_teacher(out_dir, data, b.train_height, b.train_width, model)
    state = "rebuilt" if cache.rebuilt else "fresh, reused"
    si = cache.val_metrics.get("si_rmse", float("nan"))
    rmse = cache.val_metrics.get("rmse", float("nan"))
    out.print(f"{spec.label}: {len(cache.stems)} maps at {b.train_width}×{b.train_height} ({state}) in {cache.path}; "
              f"validation si-RMSE {si:.4f}, RMSE {rmse:.3f} m", highlight=False, soft_wrap=True)
