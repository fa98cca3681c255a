"""PyTorch -> ONNX with static shapes at deployment resolution, checked with onnxruntime."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from . import check_close

INPUT_NAME, OUTPUT_NAME = "image", "depth"
OPSET = 17


def export_onnx(model: torch.nn.Module, path: Path, height: int, width: int) -> Path:
    """Write one self-contained ONNX file (the TorchScript exporter: no side `.onnx.data` file)."""
    model = model.eval().cpu()
    dummy = torch.zeros(1, 3, height, width)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python ints: intended, sizes are static
        torch.onnx.export(model, (dummy,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True)
    return path


def run_onnx(path: Path, image_nchw: np.ndarray) -> np.ndarray:
    """Depth (N, H, W) from the ONNX model for float32 NCHW 0..255 input."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: image_nchw.astype(np.float32)})
    return out[:, 0]


def check_onnx_parity(model: torch.nn.Module, path: Path, image_nchw: np.ndarray, tolerance: float,
                      rtol: float = 1e-4) -> float:
    """Max abs depth difference (metres) between PyTorch and ONNX; ExportError beyond the tolerance."""
    with torch.no_grad():
        expected = model.eval().cpu()(torch.from_numpy(image_nchw.astype(np.float32))).numpy()[:, 0]
    return check_close(run_onnx(path, image_nchw), expected, tolerance, rtol, "ONNX output differs from PyTorch")
