"""Knowledge distillation from a cached teacher into every candidate (issue #5)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .loop import LossFn


@dataclass
class Distillation:
    """What a trial needs to distil: cached teacher depth aligned with the training split."""

    maps: np.ndarray  # (N, H, W) teacher depth in metres (float16), aligned with the training split
    make_loss: Callable[[float], LossFn]  # lambda -> loss over (pred, batch); batch["teacher"] is (B,1,H,W)
    record: dict[str, Any]  # teacher folder and fingerprint, for the trial record
