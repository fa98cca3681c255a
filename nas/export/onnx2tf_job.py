"""Subprocess entry point: convert one ONNX file with onnx2tf (`python -m nas.export.onnx2tf_job`).

onnx2tf calls sys.exit on errors, keeps global TensorFlow state, and reads its sample-image file from
the current directory; a child process with its own working directory contains all three.

    python -m nas.export.onnx2tf_job MODEL.onnx OUT_DIR                 # float32 only
    python -m nas.export.onnx2tf_job MODEL.onnx OUT_DIR CALIB.npy       # float32 + int8

With a calibration file the child also writes `model_integer_quant.tflite` (int8 weights and
activations, float32 input and output), calibrated on CALIB.npy: float32 NHWC images, 0..255.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

FP32_FILE = "model_float32.tflite"  # onnx2tf's name for its float32 model (output_file_name "model")
INT8_FILE = "model_integer_quant.tflite"


def tf_input_name(onnx_name: str) -> str:
    """The name onnx2tf gives an ONNX graph input in a saved model with signatures (its `sanitizing` rules).

    Calibration batches are keyed by this name; a mismatch makes the converter fail.
    """
    return re.sub("^/", "wa/", onnx_name.replace(":", "__"))


def onnx_input_name(onnx_path: str) -> str:
    """The one graph input of the ONNX model (initializers listed as inputs are not inputs)."""
    import onnx

    graph = onnx.load(onnx_path, load_external_data=False).graph
    initializers = {init.name for init in graph.initializer}
    (name,) = [inp.name for inp in graph.input if inp.name not in initializers]
    return name


def write_int8(saved_model_dir: str, out_path: Path, input_name: str, calibration_npy: str) -> None:
    """Per-channel int8 weights and activations with float32 input and output, calibrated on our images.

    The same TensorFlow Lite converter settings onnx2tf's `output_integer_quantized_tflite` uses for its
    `_integer_quant` file, applied to the saved model onnx2tf wrote, and nothing else: onnx2tf's option
    also writes dynamic-range, full-integer-I/O and two int16-activation variants, three more
    calibrated conversions that nothing here reads (`benchmarks/conversion_cost.py` measures the time).
    Images go in raw (0..255): our graphs normalise inside.
    """
    import numpy as np
    import tensorflow as tf

    images = np.load(calibration_npy).astype(np.float32)

    def representative_dataset():
        for image in images:
            yield {input_name: tf.constant(image[None])}

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.SELECT_TF_OPS]
    converter.representative_dataset = representative_dataset
    out_path.write_bytes(converter.convert())


def try_loading(path: Path) -> None:
    """Load and run the model once with LiteRT here, in the child, before the caller's process does.

    A model the runtime cannot take may abort the process that loads it instead of raising (seen: a
    double free in XNNPACK on a miscalibrated int8 graph); the caller would lose its whole study, this
    child only its conversion. Errors LiteRT does raise are left to the caller's checks, which name them.
    """
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_path=str(path), num_threads=1)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        interpreter.invoke()
    except (RuntimeError, ValueError):
        pass


def main(onnx_path: str, out_dir: str, calibration_npy: str | None = None) -> int:
    import onnx2tf

    try:
        # Signatures make onnx2tf save a model whose input the int8 converter can feed by name.
        onnx2tf.convert(input_onnx_file_path=onnx_path, output_folder_path=out_dir,
                        copy_onnx_input_output_names_to_tflite=True, non_verbose=True,
                        output_signaturedefs=calibration_npy is not None)
    except SystemExit as exc:  # onnx2tf reports many conversion errors this way
        return int(exc.code or 1)
    if calibration_npy is not None:
        write_int8(out_dir, Path(out_dir) / INT8_FILE, tf_input_name(onnx_input_name(onnx_path)), calibration_npy)
    for name in (FP32_FILE, INT8_FILE):
        if (Path(out_dir) / name).exists():
            try_loading(Path(out_dir) / name)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
