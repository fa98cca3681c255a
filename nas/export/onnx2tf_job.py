"""Subprocess entry point: convert one ONNX file with onnx2tf (`python -m nas.export.onnx2tf_job`).

onnx2tf calls sys.exit on errors, keeps global TensorFlow state, and reads its sample-image file from
the current directory; a child process with its own working directory contains all three.
"""

from __future__ import annotations

import sys


def main(onnx_path: str, out_dir: str) -> int:
    import onnx2tf

    try:
        onnx2tf.convert(input_onnx_file_path=onnx_path, output_folder_path=out_dir,
                        copy_onnx_input_output_names_to_tflite=True, non_verbose=True)
    except SystemExit as exc:  # onnx2tf reports many conversion errors this way
        return int(exc.code or 1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
