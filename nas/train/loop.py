"""The training loop shared by brief trial training, `nas finalize` and the teacher.

Batches come from a `BatchSource` (`nas.train.batches`): candidates train on crops at the pixel scale
they will run at, the teacher on whole frames. Image, ground truth and any extra aligned maps (the
cached teacher depth) are augmented identically and fed to a loss that sees the whole batch dict,
so distillation plugs in as one more term. Validation runs the model on whole frames of the split it
is given (for candidates: deployment resolution), the figure the pruner acts on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..config import Budget
from ..data.dataset import DepthSplit
from ..errors import StageError
from ..metrics import mean_metrics
from .batches import Batch, BatchSource, WholeFrameBatches
from .losses import supervised_loss
LossFn = Callable[[torch.Tensor, Batch], torch.Tensor]
# Called at each evaluation point with (step, validation si-RMSE); returning True stops training.
EvalCallback = Callable[[int, float], bool]


class TrainingDiverged(StageError):
    """The loss became NaN or infinite; the trial fails with this reason."""


@dataclass
class TrainResult:
    steps: int
    seconds: float
    final_loss: float
    val_si_rmse: float | None = None
    history: list[tuple[int, float]] = field(default_factory=list)  # (step, val si-RMSE)
    stopped_early: bool = False


def default_device() -> torch.device:
    """CUDA when present (a user's GPU), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def supervised(pred: torch.Tensor, batch: Batch) -> torch.Tensor:
    return supervised_loss(pred, batch["depth"])


@torch.no_grad()
def validate(model: torch.nn.Module, split: DepthSplit, device: torch.device, batch_size: int = 4) -> float:
    """Mean per-image si-RMSE of the PyTorch model on `split` at the split's resolution."""
    model.eval()

    def predict(rgb: np.ndarray) -> np.ndarray:
        image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2).float().to(device)
        return model(image).float().cpu().numpy()[:, 0] * 1000.0

    metrics, _ = mean_metrics(predict, split.rgb, split.depth_mm, batch_size, names=split.stems)
    return metrics.get("si_rmse", float("nan"))


def train(model: torch.nn.Module, data: DepthSplit | BatchSource, budget: Budget, *, val_split: DepthSplit | None = None,
          extra_maps: dict[str, np.ndarray] | None = None, loss_fn: LossFn = supervised, seed: int = 0,
          device: torch.device | None = None, lr: float | None = None, on_eval: EvalCallback | None = None,
          progress: Callable[[int, int, float], None] | None = None) -> TrainResult:
    """Train `model` for `budget.steps` AdamW steps with a one-cycle schedule.

    `data` is a batch source, or a split held at the training resolution (whole frames); then
    `extra_maps` are (N, H, W) arrays aligned with it (e.g. "teacher" depth in metres) that enter
    each batch under their key, augmented like the ground truth.
    """
    batches = WholeFrameBatches(data, budget.batch_size, extra_maps) if isinstance(data, DepthSplit) else data
    device = device or default_device()
    model.to(device).train()
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr or budget.lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr or budget.lr, total_steps=max(budget.steps, 1),
                                                    pct_start=0.15)
    eval_steps = {max(1, round(budget.steps * (k + 1) / budget.eval_points)) for k in range(budget.eval_points)}
    result = TrainResult(steps=0, seconds=0.0, final_loss=float("nan"))
    start = time.perf_counter()
    for step in range(1, budget.steps + 1):
        batch = {k: v.to(device, non_blocking=True) for k, v in batches(generator).items()}
        pred = model(batch["image"])
        loss = loss_fn(pred, batch)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"loss became {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        scheduler.step()
        result.steps, result.final_loss = step, float(loss.item())
        if progress:
            progress(step, budget.steps, result.final_loss)
        if val_split is not None and step in eval_steps:
            score = validate(model, val_split, device)
            model.train()
            result.history.append((step, score))
            result.val_si_rmse = score
            if on_eval and on_eval(step, score):
                result.stopped_early = True
                break
    result.seconds = time.perf_counter() - start
    model.eval()
    if not math.isfinite(result.final_loss):
        raise TrainingDiverged("training produced no finite loss")
    return result
