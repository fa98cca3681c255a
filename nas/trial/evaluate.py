"""Scoring a `.tflite` on validation images at deployment resolution, and the preview image."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from nas.data.dataset import DepthSplit
from nas.data.preview import draw_preview
from nas.export.tflite_convert import TFLiteModel
from nas.metrics import mean_metrics


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


def write_preview(path: Path, rgb: np.ndarray, gt_mm: np.ndarray, pred_mm: np.ndarray) -> Path:
    """The trial's `preview.png` in the dashboard: the one labelled preview (`nas.data.preview`) of the first
    validation frame, the prediction given in millimetres."""
    return draw_preview(path, rgb[None], gt_mm[None], (np.asarray(pred_mm, np.float64) / 1000.0)[None])
