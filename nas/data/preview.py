"""The one depth preview: input | ground truth | prediction | error, labelled, with colour bars in metres.

Every preview a person sees is drawn here: the dashboard's per-trial `preview.png` (`nas.trial.evaluate`),
the report's previews and `nas finalize`'s `previews.png` (`nas.report.depth_previews`). Ground truth and
prediction share one colour map and one colour bar in metres, so a colour means the same depth in both;
pixels whose ground truth is unknown (0) are drawn in `UNKNOWN_COLOUR`, one neutral grey that is in
neither colour map, never as a depth. The error panel is prediction − ground truth, in metres.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from nas.infra.files import atomic_save  # noqa: E402

UNKNOWN_COLOUR = (0.6, 0.6, 0.6)  # grey: in neither colour map below
DEPTH_CMAP = "viridis"
ERROR_CMAP = "RdBu_r"  # prediction − ground truth: red too far, blue too near
COLUMNS = ("input", "ground truth", "prediction", "error (prediction − ground truth)")
CAPTION = ("input | ground truth | prediction | error (prediction − ground truth); ground truth and prediction share "
           "the colour bar in metres, grey pixels have no ground truth")
UNKNOWN_NOTE = "grey: ground truth unknown (0)"
DPI = 110


def _with_unknown(name: str):
    return plt.get_cmap(name).with_extremes(bad=UNKNOWN_COLOUR)


def draw_preview(path: Path, rgb: np.ndarray, depth_mm: np.ndarray, pred_m: np.ndarray,
                 names: Sequence[str] | None = None) -> Path:
    """Draw the preview grid into the PNG `path`, one row per image; returns `path`.

    `rgb` (N, H, W, 3) uint8, `depth_mm` (N, H, W) ground truth in millimetres (0 = unknown), `pred_m`
    (N, H, W) the predictions in metres; `names` label the rows.
    """
    if len(rgb) == 0 or not len(rgb) == len(depth_mm) == len(pred_m):
        raise ValueError(f"need as many images as depth maps and predictions, at least one (got {len(rgb)}, "
                         f"{len(depth_mm)} and {len(pred_m)})")
    gt_m = [np.asarray(d, np.float64) / 1000.0 for d in depth_mm]
    pred_m = [np.asarray(p, np.float64).reshape(gt.shape) for p, gt in zip(pred_m, gt_m)]
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
    fig.text(0.01, 0.005, UNKNOWN_NOTE, fontsize=8, color="0.3")
    atomic_save(path, lambda f: fig.savefig(f, dpi=DPI, format="png"))
    plt.close(fig)
    return path
