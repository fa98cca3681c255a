"""Export one architecture (untrained weights) to ONNX and TFLite with a parity report.

Used by `nas arch export` and the conversion tests: every point of the space must deploy. The head is
zero-initialised for training, which would make any parity check trivially pass, so here it gets
random weights: the comparison then covers every layer.

At precision "int8" the float32 model of the same onnx2tf run is checked as strictly as ever (the
conversion is sound), and the int8 one is only measured against ONNX (quantization error is scored,
not failed).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..arch import Arch
from ..data.synth import render_scene
from ..models import DepthNet, count_macs, count_params
from . import check_precision
from .onnx_export import check_onnx_parity, export_onnx
from .tflite_convert import (calibration_sample, check_quantized_parity, check_tflite_parity, convert_to_tflite,
                             fp32_companion)

# Synthetic scenes int8 calibration sees: enough to span the activation ranges of indoor and street
# scenes, few enough that rendering and calibrating stay a small part of a conversion.
CALIBRATION_SCENES = 8


def calibration_scenes(seed: int, height: int, width: int, count: int = CALIBRATION_SCENES) -> np.ndarray:
    """uint8 RGB (count, H, W, 3) synthetic scenes, seeds after `seed` (the parity image is not among them)."""
    return np.stack([render_scene(seed + 1 + i, width, height)[0] for i in range(count)])


def export_arch(arch: Arch, out_dir: Path, height: int = 480, width: int = 640, tolerance: float = 1e-3,
                seed: int = 0, precision: str = "fp32") -> dict:
    """Write model.onnx and model.tflite for `arch` into `out_dir`; the figures of the export.

    precision "int8": model.tflite is the int8 model (float32 I/O) calibrated on synthetic scenes,
    model.fp32.tflite its float32 twin; the figures add the int8 error against ONNX (`int8_vs_onnx_*`).
    """
    check_precision(precision)
    torch.manual_seed(seed)
    model = DepthNet(arch).eval()
    torch.nn.init.normal_(model.head.conv.weight, std=0.05)
    rgb, _ = render_scene(seed, width, height)
    sample = rgb.transpose(2, 0, 1)[None].astype(np.float32)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    onnx_path = export_onnx(model, out_dir / "model.onnx", height, width)
    onnx_err = check_onnx_parity(model, onnx_path, sample, tolerance)
    calibration = calibration_scenes(seed, height, width) if precision == "int8" else None
    tflite_path = convert_to_tflite(onnx_path, out_dir / "model.tflite", calibration_sample([rgb]),
                                    log_path=out_dir / "onnx2tf.log", precision=precision, calibration=calibration)
    fp32_path = fp32_companion(tflite_path) if precision == "int8" else tflite_path
    tflite_err = check_tflite_parity(fp32_path, onnx_path, sample, tolerance)
    report = {"arch_id": arch.arch_id, "params": count_params(model), "macs": count_macs(model, height, width),
              "precision": precision, "onnx": str(onnx_path), "tflite": str(tflite_path),
              "tflite_bytes": tflite_path.stat().st_size,
              "max_abs_err_onnx_vs_torch_m": onnx_err, "max_abs_err_tflite_vs_onnx_m": tflite_err}
    if precision == "int8":
        quant = check_quantized_parity(tflite_path, onnx_path, sample)
        report.update({"tflite_fp32": str(fp32_path), "tflite_fp32_bytes": fp32_path.stat().st_size,
                       **{f"int8_vs_onnx_{key}": value for key, value in quant.items()}})
    report["convert_seconds"] = round(time.perf_counter() - start, 2)
    return report
