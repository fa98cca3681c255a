"""Export one architecture (untrained weights) to ONNX and TFLite with a parity report.

Used by `nas arch export` and the conversion tests: every point of the space must deploy. The head is
zero-initialised for training, which would make any parity check trivially pass, so here it gets
random weights: the comparison then covers every layer.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..arch import Arch
from ..data.synth import render_scene
from ..models import DepthNet, count_macs, count_params
from .onnx_export import check_onnx_parity, export_onnx
from .tflite_convert import calibration_sample, check_tflite_parity, convert_to_tflite


def export_arch(arch: Arch, out_dir: Path, height: int = 480, width: int = 640, tolerance: float = 1e-3,
                seed: int = 0) -> dict:
    """Write model.onnx and model.tflite for `arch` into `out_dir`; the figures of the export."""
    torch.manual_seed(seed)
    model = DepthNet(arch).eval()
    torch.nn.init.normal_(model.head.conv.weight, std=0.05)
    rgb, _ = render_scene(seed, width, height)
    sample = rgb.transpose(2, 0, 1)[None].astype(np.float32)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    onnx_path = export_onnx(model, out_dir / "model.onnx", height, width)
    onnx_err = check_onnx_parity(model, onnx_path, sample, tolerance)
    tflite_path = convert_to_tflite(onnx_path, out_dir / "model.tflite", calibration_sample([rgb]),
                                    log_path=out_dir / "onnx2tf.log")
    tflite_err = check_tflite_parity(tflite_path, onnx_path, sample, tolerance)
    return {"arch_id": arch.arch_id, "params": count_params(model), "macs": count_macs(model, height, width),
            "onnx": str(onnx_path), "tflite": str(tflite_path), "tflite_bytes": tflite_path.stat().st_size,
            "max_abs_err_onnx_vs_torch_m": onnx_err, "max_abs_err_tflite_vs_onnx_m": tflite_err,
            "convert_seconds": round(time.perf_counter() - start, 2)}
