"""Subprocess entry point: convert one ONNX file with onnx2tf (`python -m nas.export.onnx2tf_job`).

onnx2tf calls sys.exit on errors, keeps global TensorFlow state, and reads its sample-image file from
the current directory; a child process with its own working directory contains all three.

    python -m nas.export.onnx2tf_job MODEL.onnx OUT_DIR                 # float32 only
    python -m nas.export.onnx2tf_job MODEL.onnx OUT_DIR CALIB.npy       # float32 + int8 variants

With a calibration file, onnx2tf also writes `model_integer_quant.tflite` (int8 weights and
activations, float32 input and output), calibrated on CALIB.npy: float32 NHWC images, 0..255.
"""

from __future__ import annotations

import re
import sys


def tf_input_name(onnx_name: str) -> str:
    """The name onnx2tf gives an ONNX graph input when it quantizes (its `sanitizing` rules).

    Calibration data is keyed by this name; a mismatch would make onnx2tf fail with a KeyError.
    """
    return re.sub("^/", "wa/", onnx_name.replace(":", "__"))


def int8_options(onnx_path: str, calibration_npy: str) -> dict:
    """onnx2tf keyword arguments for per-channel integer quantization calibrated on our images.

    onnx2tf feeds `(data - mean) / std` to the converter; our graphs take raw 0..255 RGB and
    normalise inside, so mean 0 and std 1 hand the images over unchanged.
    """
    import onnx

    graph = onnx.load(onnx_path, load_external_data=False).graph
    initializers = {init.name for init in graph.initializer}
    (name,) = [inp.name for inp in graph.input if inp.name not in initializers]
    return {"output_integer_quantized_tflite": True, "quant_type": "per-channel",
            "custom_input_op_name_np_data_path": [[tf_input_name(name), calibration_npy, 0.0, 1.0]]}


def main(onnx_path: str, out_dir: str, calibration_npy: str | None = None) -> int:
    import onnx2tf

    options = int8_options(onnx_path, calibration_npy) if calibration_npy else {}
    try:
        onnx2tf.convert(input_onnx_file_path=onnx_path, output_folder_path=out_dir,
                        copy_onnx_input_output_names_to_tflite=True, non_verbose=True, **options)
    except SystemExit as exc:  # onnx2tf reports many conversion errors this way
        return int(exc.code or 1)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
