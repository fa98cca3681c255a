"""PyTorch → ONNX → TFLite with parity checks: one sequence for trials, `nas finalize` and `nas arch export`.

`export_checked` is the sequence every deployed model goes through. `export_arch` applies it to an
untrained architecture (`nas arch export` and the conversion tests: every point of the space must
deploy). The head is zero-initialised for training, which would make any parity check trivially
pass, so there it gets random weights: the comparison then covers every layer.

At precision "int8" the int8 model is only measured against ONNX (quantization error is scored, not
failed), and the float32 model of the same onnx2tf run is checked as strictly as a float32 export, but
a mismatch there is recorded (`fp32_twin_vs_onnx_mismatch`) rather than failed: the deployed int8
model is what the trial scores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.arch import Arch
from nas.data.synth import render_scene
from nas.models import DepthNet, count_macs, count_params
from nas.export import ExportError, check_precision
from nas.export.onnx_export import check_onnx_parity, export_onnx
from nas.export.tflite_convert import (calibration_sample, check_quantized_parity, check_tflite_parity, convert_to_tflite,
                             fp32_companion)

# Synthetic scenes int8 calibration sees: enough to span the activation ranges of indoor and street
# scenes, few enough that rendering and calibrating stay a small part of a conversion.
CALIBRATION_SCENES = 8
FP32_TWIN_MISMATCH = "fp32_twin_vs_onnx_mismatch"  # parity key: an int8 run's float32 twin out of tolerance


def calibration_scenes(seed: int, height: int, width: int, count: int = CALIBRATION_SCENES) -> np.ndarray:
    """uint8 RGB (count, H, W, 3) synthetic scenes, seeds after `seed` (the parity image is not among them)."""
    return np.stack([render_scene(seed + 1 + i, width, height)[0] for i in range(count)])


@dataclass
class Exported:
    """Files of one checked export and what the checks found."""

    onnx_path: Path
    tflite_path: Path  # the deployed model (int8 when precision is int8)
    fp32_path: Path  # the float32 model of the same conversion (== tflite_path for fp32)
    parity: dict[str, Any]  # onnx_vs_torch, tflite_vs_onnx (float32 model, metres), int8_vs_onnx (int8 only)


def export_checked(model: torch.nn.Module, out_dir: Path, sample_nchw: np.ndarray, onnx2tf_sample: np.ndarray,
                   height: int, width: int, *, precision: str = "fp32", calibration: np.ndarray | None = None,
                   tolerance: float = 1e-3, rtol: float = 1e-4) -> Exported:
    """Write model.onnx and model.tflite into `out_dir`, checking each step against the one before.

    The float32 graph must match within `tolerance` (ExportError otherwise: the conversion is broken).
    An int8 model's distance from ONNX is measured, never failed: quantization error is the model's
    accuracy, which the trial scores.
    """
    check_precision(precision)
    model = model.cpu().eval()
    onnx_path = export_onnx(model, out_dir / "model.onnx", height, width)
    parity: dict[str, Any] = {"onnx_vs_torch": check_onnx_parity(model, onnx_path, sample_nchw, tolerance, rtol)}
    tflite_path = convert_to_tflite(onnx_path, out_dir / "model.tflite", onnx2tf_sample,
                                    log_path=out_dir / "onnx2tf.log", precision=precision, calibration=calibration)
    fp32_path = fp32_companion(tflite_path) if precision == "int8" else tflite_path
    if precision == "int8":
        # The deployed model is the int8 one, scored on validation; the float32 twin of its conversion is a
        # diagnostic: recorded, not failed. (Before graph v3 the twin of trained RFDB-ESA networks was 0.1-0.5 m
        # off ONNX: onnx2tf's quantization option zero-padded ESA's max-pool, now padded explicitly.)
        try:
            parity["tflite_vs_onnx"] = check_tflite_parity(fp32_path, onnx_path, sample_nchw, tolerance, rtol)
        except ExportError as exc:
            parity[FP32_TWIN_MISMATCH] = str(exc)
        parity["int8_vs_onnx"] = check_quantized_parity(tflite_path, onnx_path, sample_nchw)
    else:
        parity["tflite_vs_onnx"] = check_tflite_parity(fp32_path, onnx_path, sample_nchw, tolerance, rtol)
    return Exported(onnx_path, tflite_path, fp32_path, parity)


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
    calibration = calibration_scenes(seed, height, width) if precision == "int8" else None
    done = export_checked(model, out_dir, sample, calibration_sample([rgb]), height, width, precision=precision,
                          calibration=calibration, tolerance=tolerance)
    report = {"arch_id": arch.arch_id, "params": count_params(model), "macs": count_macs(model, height, width),
              "precision": precision, "onnx": str(done.onnx_path), "tflite": str(done.tflite_path),
              "tflite_bytes": done.tflite_path.stat().st_size,
              "max_abs_err_onnx_vs_torch_m": done.parity["onnx_vs_torch"],
              "max_abs_err_tflite_vs_onnx_m": done.parity.get("tflite_vs_onnx")}
    if FP32_TWIN_MISMATCH in done.parity:
        report[FP32_TWIN_MISMATCH] = done.parity[FP32_TWIN_MISMATCH]
    if precision == "int8":
        report.update({"tflite_fp32": str(done.fp32_path), "tflite_fp32_bytes": done.fp32_path.stat().st_size,
                       **{f"int8_vs_onnx_{key}": value for key, value in done.parity["int8_vs_onnx"].items()}})
    report["convert_seconds"] = round(time.perf_counter() - start, 2)
    return report
