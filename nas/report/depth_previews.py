"""Depth previews on a few images: input | ground truth | prediction | error, one row per image.

Any predictor will do (a `.tflite` via `TFLiteModel.predict`, a PyTorch model, a test's numpy
lambda), so `nas finalize` and `nas report` draw the same figure. Ground truth and prediction share
one colour map and one colour bar in metres, so a colour means the same depth in both; pixels whose
ground truth is unknown (0) are drawn in `UNKNOWN_COLOUR`, never as a depth.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from nas.report.figures import _save, plt

DepthPredictor = Callable[[np.ndarray], np.ndarray]  # RGB (H, W, 3) 0..255 -> depth (H, W) in metres

UNKNOWN_COLOUR = (0.6, 0.6, 0.6)  # grey: in neither colour map below
DEPTH_CMAP = "viridis"
ERROR_CMAP = "RdBu_r"  # prediction − ground truth: red too far, blue too near
COLUMNS = ("input", "ground truth", "prediction", "error (prediction − ground truth)")


def _with_unknown(name: str):
    return plt.get_cmap(name).with_extremes(bad=UNKNOWN_COLOUR)


def depth_previews(path: Path, rgb: np.ndarray, depth_mm: np.ndarray, predict: DepthPredictor,
                   names: Sequence[str] | None = None) -> Path:
    """Run `predict` on each image of `rgb` (N, H, W, 3) and draw the grid against `depth_mm` (N, H, W,
    millimetres, 0 = unknown) into the PNG `path`; returns `path`."""
    if len(rgb) == 0 or len(rgb) != len(depth_mm):
        raise ValueError(f"need as many images as depth maps, at least one (got {len(rgb)} and {len(depth_mm)})")
    gt_m = [np.asarray(d, np.float64) / 1000.0 for d in depth_mm]
    pred_m = [np.asarray(predict(np.asarray(image)), np.float64).reshape(gt.shape) for image, gt in zip(rgb, gt_m)]
    known = np.concatenate([gt[gt > 0] for gt in gt_m])
    vmax = float(np.percentile(known, 98)) if known.size else float(max(p.max() for p in pred_m))
    errors = [np.ma.masked_where(gt <= 0, p - gt) for p, gt in zip(pred_m, gt_m)]
    err_max = max((float(np.percentile(np.abs(e.compressed()), 98)) for e in errors if e.count()), default=1.0)

    rows = len(rgb)
    aspect = rgb.shape[1] / rgb.shape[2]
    fig, axes = plt.subplots(rows, 4, figsize=(13, 0.35 + 3.0 * aspect * rows + 0.45), squeeze=False,
                             layout="constrained")
    depth_cmap, error_cmap = _with_unknown(DEPTH_CMAP), _with_unknown(ERROR_CMAP)
    for r in range(rows):
        ax_in, ax_gt, ax_pred, ax_err = axes[r]
        ax_in.imshow(rgb[r])
        depth_image = ax_gt.imshow(np.ma.masked_where(gt_m[r] <= 0, gt_m[r]), cmap=depth_cmap, vmin=0, vmax=vmax,
                                   interpolation="nearest")
        ax_pred.imshow(pred_m[r], cmap=depth_cmap, vmin=0, vmax=vmax, interpolation="nearest")
        error_image = ax_err.imshow(errors[r], cmap=error_cmap, vmin=-err_max, vmax=err_max, interpolation="nearest")
        if names is not None:
            ax_in.set_ylabel(str(names[r]), fontsize=8)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, title in zip(axes[0], COLUMNS):
        ax.set_title(title, fontsize=9)
    fig.colorbar(depth_image, ax=axes[:, 1:3].ravel().tolist(), label="depth (m)", shrink=0.9, pad=0.01)
    fig.colorbar(error_image, ax=axes[:, 3].tolist(), label="error (m)", shrink=0.9, pad=0.02)
    fig.text(0.01, 0.005, "grey: ground truth unknown (0)", fontsize=8, color="0.3")
    _save(fig, path, tight=False)
    return path
