"""Depth previews of any predictor on a few images, drawn by the one preview of `nas.data.preview`.

Any predictor will do (a `.tflite` via `TFLiteModel.predict`, a PyTorch model, a test's numpy
lambda), so `nas finalize`, `nas report` and the dashboard's per-trial `preview.png` show the same
figure: input | ground truth | prediction | error, labelled, one colour bar in metres, unknown grey.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from nas.data.preview import CAPTION, COLUMNS, DEPTH_CMAP, ERROR_CMAP, UNKNOWN_COLOUR, draw_preview

__all__ = ["CAPTION", "COLUMNS", "DEPTH_CMAP", "ERROR_CMAP", "UNKNOWN_COLOUR", "DepthPredictor", "depth_previews"]

DepthPredictor = Callable[[np.ndarray], np.ndarray]  # RGB (H, W, 3) 0..255 -> depth (H, W) in metres


def depth_previews(path: Path, rgb: np.ndarray, depth_mm: np.ndarray, predict: DepthPredictor,
                   names: Sequence[str] | None = None) -> Path:
    """Run `predict` on each image of `rgb` (N, H, W, 3) and draw the grid against `depth_mm` (N, H, W,
    millimetres, 0 = unknown) into the PNG `path`; returns `path`."""
    if len(rgb) == 0 or len(rgb) != len(depth_mm):
        raise ValueError(f"need as many images as depth maps, at least one (got {len(rgb)} and {len(depth_mm)})")
    predictions = [np.asarray(predict(np.asarray(image)), np.float64).reshape(np.shape(gt))
                   for image, gt in zip(rgb, depth_mm)]
    return draw_preview(path, rgb, depth_mm, predictions, names)
