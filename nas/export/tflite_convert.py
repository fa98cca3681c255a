"""ONNX -> float32 TFLite with onnx2tf, offline, and the TFLite runtime used to check and score it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from . import ExportError, check_close

# onnx2tf downloads this file from the internet unless it lies in the working directory.
SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"


def calibration_sample(images: list[np.ndarray]) -> np.ndarray:
    """onnx2tf's sample-image array (20×128×128×3 float32, 0..1) made from our own RGB images."""
    from PIL import Image

    tiles = [np.asarray(Image.fromarray(img).resize((128, 128), Image.BILINEAR), np.float32) / 255.0
             for img in images[:20]]
    while len(tiles) < 20:
        tiles.append(tiles[len(tiles) % max(len(images), 1)] if images else np.full((128, 128, 3), 0.5, np.float32))
    return np.stack(tiles[:20]).astype(np.float32)


def convert_to_tflite(onnx_path: Path, out_path: Path, sample: np.ndarray, timeout_s: float = 900,
                      log_path: Path | None = None) -> Path:
    """Convert `onnx_path` to a float32 `.tflite` at `out_path`; ExportError with onnx2tf's last words."""
    with tempfile.TemporaryDirectory(prefix="nas-onnx2tf-") as tmp:
        work = Path(tmp)
        np.save(work / SAMPLE_FILE, sample)
        model_copy = work / "model.onnx"  # onnxsim rewrites its input in place: convert a copy
        shutil.copyfile(onnx_path, model_copy)
        # onnx2tf runs the `onnxsim` executable found on PATH: make it the one beside this interpreter.
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        env = {**os.environ, "PATH": path, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
        try:
            proc = subprocess.run([sys.executable, "-m", "nas.export.onnx2tf_job", str(model_copy), str(work / "tf")],
                                  cwd=work, env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise ExportError(f"onnx2tf did not finish within {timeout_s:.0f} s") from exc
        output = proc.stdout + proc.stderr
        if log_path:
            log_path.write_text(output)
        produced = work / "tf" / "model_float32.tflite"
        if proc.returncode != 0 or not produced.exists():
            tail = " | ".join(line.strip() for line in output.strip().splitlines()[-3:])
            raise ExportError(f"onnx2tf failed (exit {proc.returncode}): {tail[-400:]}")
        out_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(produced, out_path)
    return out_path


class TFLiteModel:
    """A float32 depth `.tflite` on the LiteRT interpreter: NCHW or NHWC input, (H, W) depth out."""

    def __init__(self, path: Path, threads: int = 2):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    @property
    def input_hw(self) -> tuple[int, int]:
        shape = self.input["shape"]
        return (int(shape[1]), int(shape[2])) if shape[-1] == 3 else (int(shape[2]), int(shape[3]))

    def predict(self, rgb_hwc: np.ndarray) -> np.ndarray:
        """Depth in metres (H, W) for one RGB uint8/float image (H, W, 3), 0..255."""
        x = rgb_hwc.astype(np.float32)[None]
        if self.input["shape"][-1] != 3:
            x = x.transpose(0, 3, 1, 2)
        self.interpreter.set_tensor(self.input["index"], np.ascontiguousarray(x))
        self.interpreter.invoke()
        return np.squeeze(self.interpreter.get_tensor(self.output["index"]))


def check_tflite_parity(tflite_path: Path, onnx_path: Path, image_nchw: np.ndarray, tolerance: float,
                        rtol: float = 1e-4) -> float:
    """Max abs depth difference (metres) between TFLite and ONNX; ExportError beyond the tolerance."""
    from .onnx_export import run_onnx

    expected = run_onnx(onnx_path, image_nchw)[0]
    got = TFLiteModel(tflite_path).predict(image_nchw[0].transpose(1, 2, 0))
    if got.shape != expected.shape:
        raise ExportError(f"TFLite output shape {got.shape} differs from ONNX {expected.shape}")
    return check_close(got, expected, tolerance, rtol, "TFLite output differs from ONNX")
