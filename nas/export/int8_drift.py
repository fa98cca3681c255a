"""Where an int8 model loses accuracy: its layers against its float32 twin's, and the calibration set.

When an int8 model's si-RMSE is worse than its float32 twin's by more than a margin (`DRIFT_MARGIN`),
`locate_int8_drift` says where the loss comes from:

* **per layer**: both `.tflite` models of one onnx2tf run are invoked on a few images with LiteRT keeping
  every intermediate tensor (`experimental_preserve_all_tensors`); each op output of the int8 model is
  dequantized with its scale and zero point and compared with the float32 tensor of the same name. The
  table gives each layer's relative RMS error (RMS of the difference over RMS of the float tensor) and
  its growth over the worst of its inputs: the layers with the largest growth are where quantization
  hurts (a too-wide activation range, a concatenation of very different scales, a sigmoid or division);
* **calibration set size**: with the ONNX model and a pool of calibration images, the model is quantized
  again on 8 / 32 / 128 of them (capped by the pool) and each one's si-RMSE against the float32 twin is
  given: falling with more images, the calibration set is too small; flat, the layers are the cause.

`nas arch export --precision int8` calls it; `nas finalize` can call `locate_int8_drift` the same way with
its validation si-RMSE of both models.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nas.export import ExportError
from nas.infra.third_party import native_stderr_to_log

DRIFT_MARGIN = 0.01  # si-RMSE the int8 model may lose to its float32 twin before the drift is located
CALIBRATION_SIZES = (8, 32, 128)
PROBE_IMAGES = 4  # images the per-layer table is computed on
_CONST = re.compile(r"^(Const(_\d+)?|tfl\.\w+|.*/ReadVariableOp.*)$")


def drift_exceeds(si_rmse_int8: float, si_rmse_fp32: float, margin: float = DRIFT_MARGIN) -> bool:
    """True when the int8 model's si-RMSE is worse than the float32 twin's by more than `margin`."""
    return si_rmse_int8 - si_rmse_fp32 > margin


def _match_key(name: str) -> str:
    """A tensor name without the constants the quantizer folds into fused names (`...;Const_82;...`)."""
    parts = [part for part in name.split(";") if not _CONST.match(part)]
    return ";".join(parts) or name


def _layer_name(name: str, limit: int = 90) -> str:
    """A readable layer name: the fused name's first two parts."""
    text = ";".join(name.split(";")[:2])
    return text if len(text) <= limit else text[:limit - 3] + "..."


class _Probe:
    """One `.tflite` with every intermediate tensor kept: its op outputs by name, float32 after a run."""

    def __init__(self, path: Path):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        # Without the default (XNNPACK) delegate: a delegated partition keeps its intermediate tensors to
        # itself, so LiteRT's own kernels run every op and every tensor holds what the op wrote.
        with native_stderr_to_log(), _quiet_preserve_warning():
            self.interpreter = Interpreter(
                model_path=str(path), num_threads=1, experimental_preserve_all_tensors=True,
                experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
            self.interpreter.allocate_tensors()
        self.tensors = {int(d["index"]): d for d in self.interpreter.get_tensor_details()}
        # LiteRT's op listing (no public one): op type, input and output tensor indices, in run order;
        # delegate nodes (none here, but a runtime may add them) repeat outputs of the ops they replace.
        self.ops = [{"op_name": op["op_name"], "inputs": [int(i) for i in op["inputs"]],
                     "outputs": [int(i) for i in op["outputs"]]}
                    for op in self.interpreter._get_ops_details() if op["op_name"] != "DELEGATE"]
        self.input = self.interpreter.get_input_details()[0]

    def run(self, rgb_hwc: np.ndarray) -> dict[int, np.ndarray]:
        """Invoke on one RGB image (H, W, 3; 0..255); every op output, dequantized, by tensor index."""
        from nas.export.tflite_convert import _dequantize, _quantize

        x = rgb_hwc.astype(np.float32)[None]
        if self.input["shape"][-1] != 3:
            x = x.transpose(0, 3, 1, 2)
        self.interpreter.set_tensor(self.input["index"], np.ascontiguousarray(_quantize(x, self.input)))
        self.interpreter.invoke()
        found: dict[int, np.ndarray] = {}
        for op in self.ops:
            for index in op["outputs"]:
                detail = self.tensors.get(index)
                if detail is None or np.dtype(detail["dtype"]).kind not in "fiu":
                    continue
                try:
                    found[index] = _dequantize(self.interpreter.get_tensor(index), detail)
                except ValueError:  # a tensor the runtime did not keep
                    continue
        return found


class _quiet_preserve_warning:
    """LiteRT warns that preserving every tensor is for debugging: that is what this is."""

    def __enter__(self) -> None:
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors.*")

    def __exit__(self, *exc: object) -> None:
        self._catch.__exit__(*exc)


def layer_drift(int8_path: Path, fp32_path: Path, images_hwc: np.ndarray) -> list[dict[str, Any]]:
    """Per-layer error of the int8 model against its float32 twin, in the float model's run order.

    Rows: layer (readable name), op, shape, rel_rmse (RMS(int8 - fp32) / RMS(fp32) over the images) and
    growth (rel_rmse less the worst rel_rmse of the op's inputs; the model input counts as exact).
    Tensors found in one model only (the int8 model's QUANTIZE/DEQUANTIZE) are left out.
    """
    if len(images_hwc) == 0:
        raise ExportError("the int8 drift table needs at least one image")
    floats, ints = _Probe(fp32_path), _Probe(int8_path)
    pairs = _pair_tensors(floats, ints)
    diff_sq: dict[int, float] = dict.fromkeys(pairs, 0.0)
    ref_sq: dict[int, float] = dict.fromkeys(pairs, 0.0)
    for image in images_hwc:
        got_f, got_q = floats.run(image), ints.run(image)
        for f_index, q_index in pairs.items():
            if f_index in got_f and q_index in got_q and got_f[f_index].shape == got_q[q_index].shape:
                ref = got_f[f_index].astype(np.float64)
                diff_sq[f_index] += float(np.sum((got_q[q_index] - ref) ** 2))
                ref_sq[f_index] += float(np.sum(ref ** 2))
    rel = {i: float(np.sqrt(diff_sq[i] / ref_sq[i])) if ref_sq[i] > 0 else float(np.sqrt(diff_sq[i]))
           for i in pairs}
    # The error reaching each tensor: its own where matched, else the worst of what its op read (an
    # unmatched layer passes its inputs' error on), so growth is never measured against a gap.
    upstream: dict[int, float] = {}
    rows: list[dict[str, Any]] = []
    for op in floats.ops:
        before = max((upstream.get(i, 0.0) for i in op["inputs"] if i >= 0), default=0.0)
        for index in op["outputs"]:
            upstream[index] = rel.get(index, before)
            if index in rel:
                rows.append({"layer": _layer_name(floats.tensors[index]["name"]), "op": op["op_name"],
                             "shape": [int(d) for d in floats.tensors[index]["shape"]],
                             "rel_rmse": round(rel[index], 6), "growth": round(rel[index] - before, 6)})
    return rows


def _pair_tensors(floats: _Probe, ints: _Probe) -> dict[int, int]:
    """Float op outputs -> the int8 op outputs of the same layer: same name (less folded constants) and
    shape, else the same first name part and shape; a name that fits several tensors is no match."""
    def outputs(probe: _Probe) -> list[int]:
        return [index for op in probe.ops for index in op["outputs"] if index in probe.tensors]

    def keyed(probe: _Probe, key: Any) -> dict[tuple[str, tuple[int, ...]], list[int]]:
        found: dict[tuple[str, tuple[int, ...]], list[int]] = {}
        for index in outputs(probe):
            detail = probe.tensors[index]
            found.setdefault((key(detail["name"]), tuple(int(d) for d in detail["shape"])), []).append(index)
        return found

    pairs: dict[int, int] = {}
    for key in (_match_key, lambda name: name.split(";")[0]):
        float_keys, int_keys = keyed(floats, key), keyed(ints, key)
        taken = set(pairs.values())
        for name, indices in float_keys.items():
            candidates = [i for i in int_keys.get(name, []) if i not in taken]
            if len(indices) == 1 and len(candidates) == 1 and indices[0] not in pairs:
                pairs[indices[0]] = candidates[0]
    return pairs


def calibration_curve(onnx_path: Path, fp32_path: Path, calibration: np.ndarray, images_hwc: np.ndarray,
                      sizes: Sequence[int] = CALIBRATION_SIZES) -> list[dict[str, Any]]:
    """si-RMSE against the float32 twin of the model quantized again on the first N calibration images.

    One conversion per size (sizes above what `calibration` holds are capped to it, duplicates dropped);
    the images scored are `images_hwc` (held out from calibration where the caller can).
    """
    from nas.export.tflite_convert import TFLiteModel, calibration_sample, convert_to_tflite, quantization_error

    counts = sorted({min(int(n), len(calibration)) for n in sizes if n > 0})
    if not counts or counts[0] < 1:
        return []
    reference = TFLiteModel(fp32_path)
    expected = np.stack([reference.predict(image) for image in images_hwc])
    sample = calibration_sample(list(calibration[:20]))
    curve = []
    with tempfile.TemporaryDirectory(prefix="nas-int8-drift-") as tmp:
        for count in counts:
            path = convert_to_tflite(onnx_path, Path(tmp) / f"calib{count}.tflite", sample, precision="int8",
                                     calibration=calibration[:count])
            model = TFLiteModel(path)
            got = np.stack([model.predict(image) for image in images_hwc])
            curve.append({"images": count, "si_rmse": round(quantization_error(got, expected)["si_rmse"], 6)})
    return curve


def locate_int8_drift(int8_path: Path, fp32_path: Path, images_hwc: np.ndarray, *, si_rmse_int8: float,
                      si_rmse_fp32: float = 0.0, margin: float = DRIFT_MARGIN, onnx_path: Path | None = None,
                      calibration: np.ndarray | None = None, sizes: Sequence[int] = CALIBRATION_SIZES,
                      probe_images: int = PROBE_IMAGES, top: int = 5) -> dict[str, Any] | None:
    """Where the int8 model's loss comes from, or None when it is within `margin` of the float32 twin.

    `si_rmse_int8` / `si_rmse_fp32`: the two models' si-RMSE on the same images (against ground truth in
    `nas finalize`; against ONNX in `nas arch export`, where the twin's is about 0). `images_hwc`: uint8 RGB
    (N, H, W, 3) at the model's input size; the first `probe_images` give the per-layer table. With
    `onnx_path` and `calibration` (uint8 RGB, N×H×W×3) the calibration-size curve is added (one int8
    conversion per size: minutes on a real network). The report: the two si-RMSEs, the gap and margin,
    `worst` (the `top` layers by growth), `layers` (every matched layer in run order) and `calibration`
    (a list of {images, si_rmse}; empty without the ONNX model).
    """
    if not drift_exceeds(si_rmse_int8, si_rmse_fp32, margin):
        return None
    layers = layer_drift(Path(int8_path), Path(fp32_path), np.asarray(images_hwc)[:max(1, probe_images)])
    worst = sorted(layers, key=lambda row: row["growth"], reverse=True)[:top]
    curve: list[dict[str, Any]] = []
    if onnx_path is not None and calibration is not None and len(calibration):
        curve = calibration_curve(Path(onnx_path), Path(fp32_path), np.asarray(calibration), np.asarray(images_hwc),
                                  sizes)
    return {"si_rmse_int8": si_rmse_int8, "si_rmse_fp32": si_rmse_fp32,
            "gap": round(si_rmse_int8 - si_rmse_fp32, 6), "margin": margin,
            "worst": worst, "layers": layers, "calibration": curve}


def export_drift(report: dict[str, Any], height: int, width: int, *, seed: int = 0, margin: float = DRIFT_MARGIN,
                 sizes: Sequence[int] = CALIBRATION_SIZES) -> dict[str, Any] | None:
    """`locate_int8_drift` for an `export_arch` report at precision int8 (`nas arch export`).

    Both models are scored against ONNX on `PROBE_IMAGES` held-out synthetic scenes (seeds far past the
    calibration's); the calibration pool is the export's own scenes (seeds after `seed`) extended to the
    largest size, so its first 8 are the images the exported model was calibrated on.
    """
    from nas.export.onnx_export import run_onnx
    from nas.export.pipeline import calibration_scenes
    from nas.export.tflite_convert import TFLiteModel, quantization_error

    onnx_path, int8_path, fp32_path = (Path(report[key]) for key in ("onnx", "tflite", "tflite_fp32"))
    images = calibration_scenes(seed + 10_000, height, width, PROBE_IMAGES)
    nchw = images.transpose(0, 3, 1, 2).astype(np.float32)
    expected = np.concatenate([run_onnx(onnx_path, image[None]) for image in nchw])
    si = {}
    for name, path in (("int8", int8_path), ("fp32", fp32_path)):
        model = TFLiteModel(path)
        si[name] = quantization_error(np.stack([model.predict(image) for image in images]), expected)["si_rmse"]
    if not drift_exceeds(si["int8"], si["fp32"], margin):
        return None
    calibration = calibration_scenes(seed, height, width, max(sizes)) if sizes else None
    return locate_int8_drift(int8_path, fp32_path, images, si_rmse_int8=si["int8"], si_rmse_fp32=si["fp32"],
                             margin=margin, onnx_path=onnx_path, calibration=calibration, sizes=sizes)


def format_drift(report: dict[str, Any]) -> str:
    """The report as a few lines for a terminal: the gap, the worst layers and the calibration curve."""
    lines = [f"int8 drift: si-RMSE {report['si_rmse_int8']:.4f} against {report['si_rmse_fp32']:.4f} for the "
             f"float32 twin (gap {report['gap']:.4f} > margin {report['margin']:g})",
             f"layers where the error grows most ({len(report['layers'])} compared):"]
    for row in report["worst"]:
        lines.append(f"  {row['growth']:+.4f}  rel RMS {row['rel_rmse']:.4f}  {row['op']:<18} "
                     f"{'x'.join(map(str, row['shape']))}  {row['layer']}")
    if report["calibration"]:
        lines.append("si-RMSE by calibration images: "
                     + ", ".join(f"{p['images']}: {p['si_rmse']:.4f}" for p in report["calibration"]))
    return "\n".join(lines)
