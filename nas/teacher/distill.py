"""Knowledge distillation from a cached teacher into every candidate (issue #5).

The student loss is the supervised loss on valid ground-truth pixels plus lambda times the
distillation loss (`nas.train.losses.distillation_loss`) against the teacher's depth on *every*
pixel the teacher covers. This module wires the two together and gets the teacher's depth for the
training split from `nas.teacher` (trained and cached first where needed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from nas.config import Budget, TeacherSetting
from nas.infra.console import err
from nas.data.dataset import DepthSplit
from nas.errors import ConfigError
from nas.teacher import align_to_split, ensure_cache, ensure_teacher, folder_lock, resolve_teacher
from nas.train.loop import Batch, LossFn
from nas.train.losses import distillation_loss, supervised_loss


@dataclass
class Distillation:
    """What a trial needs to distil: cached teacher depth aligned with the training split."""

    maps: np.ndarray  # (N, H, W) teacher depth in metres (float16), aligned with the training split
    make_loss: Callable[[float], LossFn]  # lambda -> loss over (pred, batch); batch["teacher"] is (B,1,H,W)
    record: dict[str, Any]  # teacher folder and fingerprint, for the trial record


@dataclass(frozen=True)
class DistilledLoss:
    """supervised(pred, ground truth) + weight * distillation(pred, teacher); a loss_fn for `train`."""

    weight: float

    def __call__(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        loss = supervised_loss(pred, batch["depth"])
        if self.weight:
            loss = loss + self.weight * distillation_loss(pred, batch["teacher"])
        return loss


def make_distillation(maps: np.ndarray, record: dict[str, Any]) -> Distillation:
    return Distillation(maps=maps, make_loss=DistilledLoss, record=record)


def prepare_distillation(setting: TeacherSetting, train_split: DepthSplit, budget: Budget
                         ) -> Distillation | None:
    """Teacher depth for `train_split`, training and caching the teacher first where needed.

    `setting.teacher` None: the self-managed teacher under `results/teacher/<budget>`, trained with the teacher
    budget of the same name as the run's budget (reused while its recipe and data fingerprint match).
    Otherwise the named folder (from `nas teacher train`, or holding a user's TorchScript/ONNX model)
    is used as it is. Either way the cache is rebuilt when stale. None when distillation is off.
    """
    if not setting.distill:
        return None
    folder = setting.folder
    # The cache covers whole frames at the budget's training resolution; crops take their window of it.
    height, width = budget.train_height, budget.train_width
    if setting.teacher is not None and not folder.is_dir():
        raise ConfigError(folder, "teacher folder does not exist")
    with folder_lock(folder):
        if setting.teacher is None:
            spec, trained = ensure_teacher(folder, setting.data_root, setting.budget, seed=setting.seed)
            why = ("trained just now" if trained else
                   f"reused: the teacher of budget {setting.budget}, trained earlier on the same data")
        else:
            spec = resolve_teacher(folder)
            why = "the one named by --teacher"
        cache = ensure_cache(folder, setting.data_root, height, width, spec)
    maps = align_to_split(cache, train_split)
    record = {"teacher_dir": str(folder.resolve()), "fingerprint": cache.fingerprint, "teacher": spec.label,
              "teacher_sha256": spec.model_sha256, "resolution": [height, width],
              "teacher_val_si_rmse": cache.val_metrics.get("si_rmse"),
              "teacher_val_rmse": cache.val_metrics.get("rmse")}
    depth = "its cached depth reused" if not cache.rebuilt else "its depth maps made now"
    err.print(f"distilling from teacher {spec.label} in {folder} ({why}; {depth}; validation si-RMSE "
              f"{cache.val_metrics.get('si_rmse', float('nan')):.4f})", markup=False, soft_wrap=True)
    return make_distillation(maps, record)
