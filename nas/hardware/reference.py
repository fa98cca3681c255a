"""The reference model: one small, fixed `.tflite` every device of a pool times, so their figures compare.

`nas devices check` times it once per device; the latency meter times it at a worker's start and every
`reference_every` trials to see that the devices still agree (`nas.hardware.agreement`). Building it needs
TensorFlow's converter. A worker has torch loaded, and TensorFlow imported after torch in one process can
crash, so the meter builds it in a child process (`python -m nas.hardware.reference PATH`) and keeps the
file under results/hardware/, with a copy in this machine's cache (`~/.cache/nas/reference/`, keyed by this
builder and the TensorFlow version) so a new results folder does not build it again.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from nas.errors import NasRuntimeError
from nas.infra.files import atomic_copy, atomic_write_bytes
from nas.infra.third_party import native_stderr_to_log

# 240×320 with 32 channels: one invoke lasts about as long as a scheduler slice on a desktop core (3 ms on the
# 2-core AMD EPYC of benchmarks/device_truth.md) and tens of ms on a Pi 4. A shorter one runs between other
# processes' slices, so a device whose CPU is shared would still time it as fast (96×128: 0.30 ms alone,
# 0.30 ms beside five CPU hogs; 240×320: 2.9 ms alone, 7.2 ms beside one).
REFERENCE_SIZE = (240, 320, 32)
REFERENCE_NAME = f"reference-{REFERENCE_SIZE[0]}x{REFERENCE_SIZE[1]}.tflite"


def build_reference_model(path: Path, height: int = REFERENCE_SIZE[0], width: int = REFERENCE_SIZE[1],
                          channels: int = REFERENCE_SIZE[2]) -> Path:
    """Write a small float32 conv net as `.tflite` (TensorFlow converter; seeded weights), atomically.

    It is the same kind of graph a trial exports (convs, ReLU, a depthwise conv, a resize), timed in
    milliseconds; tests use a 16x16 one that runs in microseconds.
    """
    import numpy as np

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with native_stderr_to_log():  # TensorFlow's start-up probes (CUDA, oneDNN) print from C++
        import tensorflow as tf

    rng = np.random.default_rng(0)

    def weights(*shape: int) -> tf.Tensor:
        return tf.constant((rng.standard_normal(shape) * 0.1).astype(np.float32))

    w_in, w_dw, w_pw, w_out = (weights(3, 3, 3, channels), weights(3, 3, channels, 1),
                               weights(1, 1, channels, channels), weights(1, 1, channels, 1))

    @tf.function(input_signature=[tf.TensorSpec([1, height, width, 3], tf.float32)])
    def net(x: tf.Tensor) -> tf.Tensor:
        y = tf.nn.relu(tf.nn.conv2d(x, w_in, 2, "SAME"))
        y = tf.nn.relu(tf.nn.depthwise_conv2d(y, w_dw, [1, 1, 1, 1], "SAME"))
        y = tf.nn.relu(tf.nn.conv2d(y, w_pw, 1, "SAME"))
        y = tf.image.resize(y, [height, width], method="nearest")
        return tf.nn.conv2d(y, w_out, 1, "SAME")

    converter = tf.lite.TFLiteConverter.from_concrete_functions([net.get_concrete_function()], net)
    with native_stderr_to_log():  # the MLIR converter reports its passes from C++
        data = converter.convert()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    return path


def _folder(results_dir: Path | None) -> Path:
    return Path(results_dir) / "hardware" if results_dir else Path(tempfile.mkdtemp(prefix="nas-"))


def reference_model(results_dir: Path | None) -> Path:
    """The reference model, built once (in this process) and kept under results/hardware/ when there is one."""
    path = _folder(results_dir) / REFERENCE_NAME
    if not path.is_file():
        build_reference_model(path)
    return path


def machine_copy() -> Path:
    """Where this machine keeps a built reference model: named by this builder's source and TensorFlow's
    version, so another version of either builds afresh."""
    try:
        tf_version = importlib.metadata.version("tensorflow")
    except importlib.metadata.PackageNotFoundError:
        tf_version = "none"
    key = hashlib.sha256(Path(__file__).read_bytes() + tf_version.encode()).hexdigest()[:16]
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "nas" / "reference" / f"{key}-{REFERENCE_NAME}"


def reference_model_apart(results_dir: Path | None, timeout_s: float = 600.0) -> Path:
    """The reference model, built once in a child process (never TensorFlow in this one) and kept under
    results/hardware/ and in this machine's cache; NasRuntimeError with the child's last words when it
    cannot be built."""
    path = _folder(results_dir) / REFERENCE_NAME
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = machine_copy()
    if kept.is_file():
        return atomic_copy(kept, path)
    try:
        done = subprocess.run([sys.executable, "-m", "nas.hardware.reference", str(path)], capture_output=True,
                              text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NasRuntimeError(path, f"could not build the reference model: {exc}") from None
    if done.returncode != 0 or not path.is_file():
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise NasRuntimeError(path, f"could not build the reference model: {last}")
    try:
        kept.parent.mkdir(parents=True, exist_ok=True)
        atomic_copy(path, kept)
    except (OSError, NasRuntimeError):
        pass  # a machine cache that cannot be written only means the next results folder builds it again
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m nas.hardware.reference PATH")
    build_reference_model(Path(sys.argv[1]))
