"""MAI 2021 depth metrics and the Final Score.

The metrics follow the challenge's official evaluation code, `depth_estimation/losses_python.py` in
https://github.com/aiff22/MAI-2021-Workshop: all per-image functions take prediction and ground
truth in millimetres (any numeric numpy arrays of one shape), both are clamped below 1 up to 1, and
only pixels with ground truth > 1 count. Data-set-level figures are the mean of the per-image values.
The Final Score, 2^(-alpha * si-RMSE) / (C * runtime) with alpha = 10, is the challenge's ranking
score (Ignatov et al., "Fast and Accurate Single-Image Depth Estimation on Mobile Devices, Mobile AI
2021 Challenge: Report", CVPR Workshops 2021).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Callable, Sequence

import numpy as np

METRIC_NAMES = ("si_rmse", "rmse", "log10", "rel")


def _valid_pairs(pred_mm: np.ndarray, gt_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred_mm, dtype=np.float64)
    gt = np.asarray(gt_mm, dtype=np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
    pred = np.maximum(pred, 1.0)
    gt = np.maximum(gt, 1.0)
    valid = gt > 1.0
    if not valid.any():
        raise ValueError("ground truth has no valid pixel (all <= 1 mm)")
    return pred[valid], gt[valid]


def rmse(pred_mm: np.ndarray, gt_mm: np.ndarray) -> float:
    """Root mean squared error in metres."""
    pred, gt = _valid_pairs(pred_mm, gt_mm)
    return float(np.sqrt(np.mean(((gt - pred) / 1000.0) ** 2)))


def si_rmse(pred_mm: np.ndarray, gt_mm: np.ndarray) -> float:
    """Scale-invariant RMSE of natural logs: sqrt(mean(d^2) - mean(d)^2), d = ln(pred) - ln(gt)."""
    pred, gt = _valid_pairs(pred_mm, gt_mm)
    d = np.log(pred) - np.log(gt)
    n = d.size
    return float(np.sqrt(max(np.sum(d**2) / n - np.sum(d) ** 2 / n**2, 0.0)))


def avg_log10(pred_mm: np.ndarray, gt_mm: np.ndarray) -> float:
    """Mean absolute difference of base-10 logs."""
    pred, gt = _valid_pairs(pred_mm, gt_mm)
    return float(np.mean(np.abs(np.log10(pred) - np.log10(gt))))


def rel(pred_mm: np.ndarray, gt_mm: np.ndarray) -> float:
    """Mean absolute relative error |pred - gt| / gt."""
    pred, gt = _valid_pairs(pred_mm, gt_mm)
    return float(np.mean(np.abs(pred - gt) / gt))


def all_metrics(pred_mm: np.ndarray, gt_mm: np.ndarray) -> dict[str, float]:
    """The four MAI metrics of one image pair, keyed as in the trial record."""
    return {"si_rmse": si_rmse(pred_mm, gt_mm), "rmse": rmse(pred_mm, gt_mm),
            "log10": avg_log10(pred_mm, gt_mm), "rel": rel(pred_mm, gt_mm)}


# A batch of uint8 RGB images (N, H, W, 3) -> predicted depth (N, H, W) in millimetres.
BatchPredictor = Callable[[np.ndarray], np.ndarray]


def mean_metrics(predict: BatchPredictor, rgb: np.ndarray, depth_mm: np.ndarray, batch_size: int = 1,
                 names: Sequence[str] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> tuple[dict[str, float], np.ndarray | None]:
    """Data-set figures of any predictor (PyTorch, TFLite, a teacher): the mean of the per-image metrics.

    The one evaluation loop, so that a figure means the same wherever it is computed. Images whose
    ground truth has no valid pixel are skipped; a non-finite prediction is an error naming the image
    (`names`). Returns the metrics ({} when no image counts) and the prediction for the first image.
    """
    per_image: list[dict[str, float]] = []
    first = None
    for start in range(0, len(rgb), batch_size):
        pred = np.asarray(predict(np.asarray(rgb[start:start + batch_size])))
        for offset, (p, gt) in enumerate(zip(pred, depth_mm[start:start + batch_size])):
            if not np.isfinite(p).all():
                name = names[start + offset] if names is not None else str(start + offset)
                raise ValueError(f"the model predicts non-finite depth on image {name}")
            if first is None:
                first = p
            if (np.asarray(gt) > 1).any():
                per_image.append(all_metrics(p, gt))
        if progress:
            progress(min(start + batch_size, len(rgb)), len(rgb))
    means = {k: float(np.mean([m[k] for m in per_image])) for k in METRIC_NAMES} if per_image else {}
    return means, first


def final_score(si_rmse: float, runtime_s: float, alpha: float = 10.0, c: float = 1.0) -> float:
    """MAI Final Score 2^(-alpha * si_rmse) / (c * runtime); runtime in seconds."""
    if runtime_s <= 0 or not math.isfinite(runtime_s):
        raise ValueError(f"runtime must be a positive number of seconds, got {runtime_s}")
    if not math.isfinite(si_rmse):
        raise ValueError(f"si_rmse must be finite, got {si_rmse}")
    return float(2.0 ** (-alpha * si_rmse) / (c * runtime_s))


@dataclass(frozen=True)
class ScoreRule:
    """How a study turns accuracy and latency into one number: the MAI 2021 Final Score
    `2^(−alpha·si-RMSE) / (C·runtime_s)` (alpha 10 and C 1 in the challenge).

    One value, so that the score a trial reports, the bound the latency screen prunes against, the iso-score
    lines of the report and the formula it prints cannot drift apart.
    """

    alpha: float = 10.0
    c: float = 1.0

    def score(self, si_rmse: float, latency_ms: float) -> float:
        """The Final Score of a model with this accuracy and median latency."""
        return final_score(si_rmse, latency_ms / 1000.0, alpha=self.alpha, c=self.c)

    def upper_bound(self, optimistic_si_rmse: float, lower_latency_ms: float) -> float:
        """The most a candidate can score: at the best accuracy it may reach and the least latency it may have
        (the score falls with both, so no candidate within those bounds does better)."""
        return self.score(optimistic_si_rmse, lower_latency_ms)

    def si_rmse_at(self, score: float, latency_ms: float) -> float:
        """The si-RMSE at which a model of this latency scores `score` (a line of equal score)."""
        return -math.log2(score * self.c * latency_ms / 1000.0) / self.alpha

    def latency_at(self, score: float, si_rmse: float) -> float:
        """The latency (ms) at which a model of this accuracy scores `score`."""
        return 1000.0 * 2.0 ** (-self.alpha * si_rmse) / (score * self.c)

    @property
    def formula(self) -> str:
        return f"2^(−{self.alpha:g}·si-RMSE) / ({self.c:g}·runtime s)"
