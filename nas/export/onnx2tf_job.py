"""Subprocess entry point: convert one ONNX file with onnx2tf (`python -m nas.export.onnx2tf_job`).

onnx2tf calls sys.exit on errors, keeps global TensorFlow state, and reads its sample-image file from
the current directory; a child process with its own working directory contains all three.

The ONNX graph is simplified here, in this process, before onnx2tf sees it: onnx2tf would run the
`onnxsim` executable three times, each a fresh interpreter that imports onnx and onnxsim again (3.5 s
apiece on a 2-core CPU, half of a LiteDepth conversion), to reach the graph one or two passes of the
same simplifier give (`benchmarks/conversion_cost.py` checks that the TFLite files are identical).

    python -m nas.export.onnx2tf_job MODEL.onnx OUT_DIR                 # float32 only
    python -m nas.export.onnx2tf_job MODEL.onnx OUT_DIR CALIB.npy       # float32 + int8
    python -m nas.export.onnx2tf_job --serve    # import once, then fork a child per job on stdin

With a calibration file the child also writes `model_integer_quant.tflite` (int8 weights and
activations, float32 input and output), calibrated on CALIB.npy: float32 NHWC images, 0..255.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import sys
import time
import traceback
from pathlib import Path

FP32_FILE = "model_float32.tflite"  # onnx2tf's name for its float32 model (output_file_name "model")
INT8_FILE = "model_integer_quant.tflite"
# The child's line once its in-process simplifier is done: a crash without it was the simplifier's.
SIMPLIFIED = "nas: graph simplified"
# Argument that leaves simplification to onnx2tf's own `onnxsim` runs, which survive a simplifier crash.
ONNX2TF_SIMPLIFIES = "--onnx2tf-simplifies"


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


def simplify(onnx_path: str, max_passes: int = 3) -> int:
    """Run onnx-simplifier on `onnx_path` in place until the graph stops changing (at most `max_passes`,
    onnx2tf's own count); the passes that changed it.

    A simplifier error leaves the file as it was, as onnx2tf does when its `onnxsim` run fails: the
    converter copes with an unsimplified graph, and the parity checks judge the result.
    """
    import onnx
    import onnxsim

    model = onnx.load(onnx_path)
    changed = 0
    for _ in range(max_passes):
        try:
            simplified, _ = onnxsim.simplify(model)
        except Exception as exc:  # onnxsim raises RuntimeError and friends from its C++ core
            print(f"onnxsim failed, converting the graph as simplified so far: {exc}", file=sys.stderr)
            break
        if simplified.graph.SerializeToString() == model.graph.SerializeToString():
            break
        model, changed = simplified, changed + 1
    if changed:
        onnx.save(model, onnx_path)
    return changed


def main(onnx_path: str, out_dir: str, calibration_npy: str | None = None, *, simplify_here: bool = True) -> int:
    """Convert; `simplify_here=False` leaves simplification to onnx2tf's `onnxsim` runs (the benchmark's
    reference path, and the parent's fallback when the simplifier crashed this process)."""
    import onnx2tf

    if simplify_here:
        simplify(onnx_path)
        print(SIMPLIFIED, file=sys.stderr, flush=True)  # past the simplifier: a later crash is not its doing
    try:
        # Signatures make onnx2tf save a model whose input the int8 converter can feed by name.
        onnx2tf.convert(input_onnx_file_path=onnx_path, output_folder_path=out_dir,
                        copy_onnx_input_output_names_to_tflite=True, non_verbose=True,
                        output_signaturedefs=calibration_npy is not None, not_use_onnxsim=simplify_here)
    except SystemExit as exc:  # onnx2tf reports many conversion errors this way
        return int(exc.code or 1)
    if calibration_npy is not None:
        write_int8(out_dir, Path(out_dir) / INT8_FILE, tf_input_name(onnx_input_name(onnx_path)), calibration_npy)
    for name in (FP32_FILE, INT8_FILE):
        if (Path(out_dir) / name).exists():
            try_loading(Path(out_dir) / name)
    return 0


def serve() -> int:
    """The conversion server (conversion_server.py): import onnx2tf (TensorFlow and onnxsim with it) once,
    then run each job a JSON line on stdin names ({"cwd", "argv", "log", "timeout_s"}) in a child forked
    for it, and answer one JSON line ({"exit", "timed_out"}) when the child has ended.

    End of input (the parent exited, or stopped the server) ends the server. It ignores Ctrl-C: the
    terminal's interrupt reaches the parent and the running child, and the parent decides.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for module in ("onnx2tf", "onnxsim"):  # what every child would import; one missing fails each child, logged
        try:
            importlib.import_module(module)
        except ImportError:
            pass
    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _run_forked(job)
        code, timed_out = _wait(pid, float(job["timeout_s"]))
        print(json.dumps({"exit": code, "timed_out": timed_out}), flush=True)
    return 0


def _run_forked(job: dict) -> None:
    """In the forked child: the job in its own directory, output to its log, then exit (never returns)."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.chdir(job["cwd"])
        log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)  # the server's job pipe is not the child's to read
        code = run_argv(job["argv"])
    except SystemExit as exc:
        code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _wait(pid: int, timeout_s: float) -> tuple[int, bool]:
    """The child's exit code (negative: the signal that ended it), killing it past `timeout_s`; whether it was."""
    deadline = time.monotonic() + timeout_s
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), False
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), True
        time.sleep(0.02)


def run_argv(argv: list[str]) -> int:
    """`ONNX [OUT_DIR [CALIBRATION]]`, with ONNX2TF_SIMPLIFIES anywhere to skip the in-process simplifier."""
    positional = [arg for arg in argv if arg != ONNX2TF_SIMPLIFIES]
    return main(*positional[:3], simplify_here=ONNX2TF_SIMPLIFIES not in argv)


if __name__ == "__main__":
    sys.exit(serve() if sys.argv[1:] == ["--serve"] else run_argv(sys.argv[1:]))
