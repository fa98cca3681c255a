"""Scoring a `.tflite` on validation images at deployment resolution, and the preview image."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image

from nas.data.dataset import DepthSplit
from nas.export.tflite_convert import TFLiteModel
from nas.metrics import mean_metrics
from nas.infra.files import atomic_save


def evaluate_tflite(tflite_path: Path, split: DepthSplit, threads: int = 2,
                    progress: Callable[[int, int], None] | None = None) -> tuple[dict[str, float], np.ndarray]:
    """Mean MAI metrics of the TFLite model over `split`, and its prediction (mm) for the first image."""
    model = TFLiteModel(tflite_path, threads=threads)
    if model.input_hw != split.rgb.shape[1:3]:
        raise ValueError(f"model input {model.input_hw} differs from the images' {split.rgb.shape[1:3]}")
    metrics, first = mean_metrics(lambda rgb: model.predict(rgb[0])[None] * 1000.0, split.rgb, split.depth_mm,
                                  names=split.stems, progress=progress)
    if not metrics:
        raise ValueError("no validation image has a valid depth pixel")
    return metrics, first


def colorize(depth_mm: np.ndarray, vmax_mm: float) -> np.ndarray:
    """Depth to an RGB uint8 image (near = bright), unknown (0) pixels black."""
    cmap = matplotlib.colormaps["magma_r"]
    rgb = (cmap(np.clip(depth_mm / max(vmax_mm, 1.0), 0, 1))[..., :3] * 255).astype(np.uint8)
    rgb[depth_mm <= 0] = 0
    return rgb


def write_preview(path: Path, rgb: np.ndarray, gt_mm: np.ndarray, pred_mm: np.ndarray) -> Path:
    """PNG of input | ground truth | prediction, on one colour scale."""
    valid = gt_mm[gt_mm > 0]
    vmax = float(np.percentile(valid, 98)) if valid.size else float(pred_mm.max())
    strip = np.concatenate([rgb, colorize(gt_mm.astype(np.float32), vmax), colorize(pred_mm, vmax)], axis=1)
    atomic_save(path, lambda f: Image.fromarray(strip).save(f, format="PNG"))
    return path
