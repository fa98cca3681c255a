"""ONNX -> TFLite (float32, or int8 calibrated on our images) with onnx2tf, offline, and the TFLite
runtime used to check and score it."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from nas.export import ExportError, check_close, check_precision
from nas.infra.files import atomic_copy
from nas.export.onnx2tf_job import FP32_FILE, INT8_FILE, ONNX2TF_SIMPLIFIES, SIMPLIFIED
from nas.export.conversion_server import CONVERSIONS
from nas.infra.third_party import native_stderr_to_log

# onnx2tf downloads this file from the internet unless it lies in the working directory.
SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"
CALIBRATION_FILE = "calibration_nhwc_0_255.npy"
# What the conversion child writes (onnx2tf's output_file_name "model"): float32 always, and the int8
# model with float I/O when given calibration images. onnx2tf also writes a float16 variant that no
# option turns off; it is left in the temporary folder.


def calibration_sample(images: list[np.ndarray]) -> np.ndarray:
    """onnx2tf's sample-image array (20×128×128×3 float32, 0..1) made from our own RGB images."""
    from PIL import Image

    tiles = [np.asarray(Image.fromarray(img).resize((128, 128), Image.BILINEAR), np.float32) / 255.0
             for img in images[:20]]
    while len(tiles) < 20:
        tiles.append(tiles[len(tiles) % max(len(images), 1)] if images else np.full((128, 128, 3), 0.5, np.float32))
    return np.stack(tiles[:20]).astype(np.float32)


def fp32_companion(out_path: Path) -> Path:
    """Where an int8 conversion keeps the float32 model of the same run (`model.fp32.tflite`)."""
    return Path(out_path).with_suffix(".fp32.tflite")


def onnx_input_hw(onnx_path: Path) -> tuple[int, int]:
    """(H, W) of the ONNX model's one image input (NCHW or NHWC, static); ExportError otherwise."""
    import onnx

    try:
        graph = onnx.load(str(onnx_path), load_external_data=False).graph
    except Exception as exc:  # onnx raises DecodeError and friends for a file that is no model
        raise ExportError(f"cannot read the ONNX model {onnx_path}: {exc}") from exc
    initializers = {init.name for init in graph.initializer}
    inputs = [inp for inp in graph.input if inp.name not in initializers]
    if len(inputs) != 1:
        raise ExportError(f"int8 calibration needs a model with one image input, {onnx_path} has {len(inputs)}")
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or 3 not in (dims[1], dims[3]) or min(dims[1:]) <= 0:
        raise ExportError(f"int8 calibration needs a static 4-D RGB input, {onnx_path} has {dims}")
    return (dims[2], dims[3]) if dims[1] == 3 else (dims[1], dims[2])


def check_calibration(calibration: np.ndarray | None, input_hw: tuple[int, int]) -> np.ndarray:
    """The calibration images as onnx2tf wants them: float32 NHWC, raw 0..255 (mean 0, std 1).

    Only uint8 RGB at the model's own resolution is accepted: float images are often 0..1, which
    calibrates every activation range for inputs 255 times too dark (on the tiny test arch that gave
    a model LiteRT's XNNPACK refused to load).
    """
    height, width = input_hw
    if calibration is None or np.size(calibration) == 0:
        raise ExportError("int8 conversion needs calibration images (uint8 RGB, N×H×W×3, from the training "
                          "data), got none")
    calibration = np.asarray(calibration)
    if calibration.dtype != np.uint8 or calibration.ndim != 4 or calibration.shape[-1] != 3:
        raise ExportError(f"calibration images must be uint8 RGB N×H×W×3, got {calibration.dtype} "
                          f"{tuple(calibration.shape)}")
    if calibration.shape[1:3] != (height, width):
        raise ExportError(f"calibration images are {calibration.shape[1]}×{calibration.shape[2]} (H×W) but the "
                          f"model input is {height}×{width}: take them at the model's input resolution")
    return calibration.astype(np.float32)


def _run_onnx2tf(work: Path, onnx_path: Path, sample: np.ndarray, calibration: np.ndarray | None,
                 timeout_s: float, log_path: Path | None, simplify_here: bool = True) -> tuple[int, str]:
    """Run the onnx2tf child in `work` (results in work/tf), forked from this worker's conversion server
    (`conversion_server.py`). Its exit code and output."""
    np.save(work / SAMPLE_FILE, sample)
    model_copy = work / "model.onnx"  # the child simplifies its input in place: convert a copy
    shutil.copyfile(onnx_path, model_copy)
    job = [str(model_copy), str(work / "tf")]
    if calibration is not None:
        np.save(work / CALIBRATION_FILE, calibration)
        job.append(str(work / CALIBRATION_FILE))
    if not simplify_here:
        job.append(ONNX2TF_SIMPLIFIES)
    try:
        code, output = CONVERSIONS.run(work, job, timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise ExportError(f"onnx2tf did not finish within {timeout_s:.0f} s{getattr(exc, 'why', '')}") from exc
    if log_path:
        log_path.write_text(output)
    return code, output


def convert_to_tflite(onnx_path: Path, out_path: Path, sample: np.ndarray, timeout_s: float = 900,
                      log_path: Path | None = None, *, precision: str = "fp32",
                      calibration: np.ndarray | None = None) -> Path:
    """Convert `onnx_path` to a `.tflite` at `out_path`; ExportError with onnx2tf's last words.

    "fp32": the float32 model. "int8": int8 weights and activations with float32 input and output,
    calibrated on `calibration` (uint8 RGB N×H×W×3 training images at the model's input size); the
    float32 model of the same run is kept at `fp32_companion(out_path)`, so comparing the two costs
    no second conversion.
    """
    check_precision(precision)
    if precision == "int8":
        calibration = check_calibration(calibration, onnx_input_hw(onnx_path))
        wanted = {INT8_FILE: out_path, FP32_FILE: fp32_companion(out_path)}
    else:
        calibration = None
        wanted = {FP32_FILE: out_path}
    with tempfile.TemporaryDirectory(prefix="nas-onnx2tf-") as tmp:
        work = Path(tmp)
        code, output = _run_onnx2tf(work, Path(onnx_path), sample, calibration, timeout_s, log_path)
        if code < 0 and SIMPLIFIED not in output:
            # The simplifier's C++ core crashed the child before conversion began. onnx2tf's own path runs
            # it as a separate program and converts the unsimplified graph when that dies: slower, but the
            # candidate is converted, as it was before the simplifier moved in process.
            first = f"the in-process simplifier crashed the conversion child ({signal.Signals(-code).name})"
            code, output = _run_onnx2tf(work, Path(onnx_path), sample, calibration, timeout_s, None,
                                        simplify_here=False)
            output = f"{first}; converted again with onnx2tf's own simplifier\n{output}"
            if log_path:
                log_path.write_text(output)
        missing = [name for name in wanted if not (work / "tf" / name).exists()]
        if code != 0 or missing:
            tail = " | ".join(line.strip() for line in output.strip().splitlines()[-3:])
            what = (f"the conversion child died of {signal.Signals(-code).name}" if code < 0  # onnx2tf, TF or LiteRT
                    else f"exit {code}" if code != 0 else f"exit 0 without {', '.join(missing)}")
            raise ExportError(f"onnx2tf failed ({what}): {tail[-400:]}")
        out_path.parent.mkdir(parents=True, exist_ok=True)
        for name, target in wanted.items():  # a full disk leaves the previous file (or none), never a part
            atomic_copy(work / "tf" / name, target)
    return out_path


def _quantize(values: np.ndarray, detail: dict) -> np.ndarray:
    """`values` in the tensor's dtype: floats as they are, integers through its scale and zero point."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return values.astype(dtype)
    scale, zero_point = detail["quantization"]
    if dtype.kind not in "iu" or not scale:
        raise ExportError(f"input {detail['name']!r} is {dtype} without quantization parameters")
    info = np.iinfo(dtype)
    return np.clip(np.round(values / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    """A tensor read back as float32: quantized integers through their scale and zero point."""
    scale, zero_point = detail["quantization"]
    if np.dtype(detail["dtype"]).kind in "iu" and scale:
        return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)
    return values.astype(np.float32)


class TFLiteModel:
    """A depth `.tflite` on the LiteRT interpreter: NCHW or NHWC input, (H, W) depth out.

    Float I/O (fp32 models, and our int8 ones) is used as is; a model with quantized int8/uint8 I/O
    (a user's full-integer model) gets its input quantized and its output dequantized.
    """

    def __init__(self, path: Path, threads: int = 2):
        from ai_edge_litert.interpreter import Interpreter

        with native_stderr_to_log():  # LiteRT announces its CPU delegate from C++ on every load
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
        self.interpreter.set_tensor(self.input["index"], np.ascontiguousarray(_quantize(x, self.input)))
        self.interpreter.invoke()
        return np.squeeze(_dequantize(self.interpreter.get_tensor(self.output["index"]), self.output))


def check_tflite_parity(tflite_path: Path, onnx_path: Path, image_nchw: np.ndarray, tolerance: float,
                        rtol: float = 1e-4) -> float:
    """Max abs depth difference (metres) between TFLite and ONNX; ExportError beyond the tolerance."""
    from nas.export.onnx_export import run_onnx

    expected = run_onnx(onnx_path, image_nchw)[0]
    got = TFLiteModel(tflite_path).predict(image_nchw[0].transpose(1, 2, 0))
    if got.shape != expected.shape:
        raise ExportError(f"TFLite output shape {got.shape} differs from ONNX {expected.shape}")
    return check_close(got, expected, tolerance, rtol, "TFLite output differs from ONNX")


def quantization_error(got: np.ndarray, expected: np.ndarray) -> dict[str, float]:
    """How far quantized depth (N, H, W metres) lies from the float reference, in three figures.

    max_abs_err_m: the worst pixel; median_rel_err: the typical pixel, |got - ref| / ref; si_rmse:
    the MAI metric of the quantized prediction against the float one (mean over images), i.e. what
    quantization alone would cost the score if the float model were perfect. ExportError only for
    a broken model: another output shape, or a non-finite value.
    """
    from nas.metrics import si_rmse

    if got.shape != expected.shape:
        raise ExportError(f"quantized TFLite output shape {got.shape[1:]} differs from ONNX {expected.shape[1:]}")
    if not np.isfinite(got).all():
        raise ExportError(f"quantized TFLite output has {int((~np.isfinite(got)).sum())} non-finite values")
    diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    ref = np.maximum(np.abs(expected.astype(np.float64)), 1e-6)
    return {"max_abs_err_m": float(diff.max()), "median_rel_err": float(np.median(diff / ref)),
            "si_rmse": float(np.mean([si_rmse(g * 1000.0, e * 1000.0) for g, e in zip(got, expected)]))}


def check_quantized_parity(tflite_path: Path, onnx_path: Path, images_nchw: np.ndarray) -> dict[str, float]:
    """Quantized TFLite against ONNX on float32 NCHW 0..255 images: `quantization_error`'s figures.

    Inaccuracy never fails: a badly quantizing model is scored honestly later. Only a broken model
    is an ExportError (see `quantization_error`; also one LiteRT cannot load, as XNNPACK refuses some
    miscalibrated graphs), or images the TFLite model cannot take.
    """
    from nas.export.onnx_export import run_onnx

    try:
        model = TFLiteModel(tflite_path)
    except (RuntimeError, ValueError) as exc:
        raise ExportError(f"LiteRT cannot load the quantized model {tflite_path}: {exc}") from exc
    if tuple(images_nchw.shape[2:]) != model.input_hw:
        raise ExportError(f"parity images are {images_nchw.shape[2]}×{images_nchw.shape[3]} but the TFLite model "
                          f"takes {model.input_hw[0]}×{model.input_hw[1]}")
    expected = np.concatenate([run_onnx(onnx_path, image[None]) for image in images_nchw])
    got = np.stack([model.predict(image.transpose(1, 2, 0)) for image in images_nchw])
    return quantization_error(got, expected)
