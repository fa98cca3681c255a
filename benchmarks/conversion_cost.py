"""What an int8 conversion costs, before and after converting only the variant we deploy.

Latency-first search converts each new graph once before training (`time_before_training`), so a
conversion's wall time decides whether timing pays. onnx2tf's `output_integer_quantized_tflite`
writes five quantized variants (dynamic range, int8 with float I/O, full-integer I/O, and two with
int16 activations), four of them calibrated; a trial reads one. `nas.export.onnx2tf_job` now lets
onnx2tf write the float32 model and its saved model, and runs TensorFlow Lite's converter once for
the int8 file with the settings onnx2tf uses for it.

For each preset (untrained weights, 640×480, calibrated on 8 synthetic scenes as `nas arch export`
does) this times, in interleaved rounds so machine load hits every path alike:

- `all_variants`: onnx2tf with its quantization option (the path before this change);
- `int8_only`: `convert_to_tflite(precision="int8")`, the path trials use now;
- `fp32`: `convert_to_tflite(precision="fp32")`, the floor: one float conversion;
- `import`: a child that only imports onnx2tf (TensorFlow included), the fixed cost a converter
  process kept warm across trials would save.

It also checks that the two int8 files are the same model: file hashes, and the largest difference
of their predictions on two held-out scenes (metres).

    .venv/bin/python benchmarks/conversion_cost.py [--presets litedepth fastdepth] [--rounds 2]

Writes benchmarks/results/conversion_cost.json and prints a Markdown table for benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from latency_weights import cpu_model  # noqa: E402
from nas.data.synth import render_scene  # noqa: E402
from nas.export.onnx_export import export_onnx  # noqa: E402
from nas.export.pipeline import calibration_scenes  # noqa: E402
from nas.export.tflite_convert import (SAMPLE_FILE, TFLiteModel, calibration_sample, convert_to_tflite,  # noqa: E402
                                       check_calibration, onnx_input_hw)
from nas.files import sha256_file  # noqa: E402
from nas.models import DepthNet  # noqa: E402
from nas.presets import PRESETS  # noqa: E402

PATHS = ("all_variants", "int8_only", "fp32", "import")
HELD_OUT_SEED = 1000

# The conversion before this change: onnx2tf's own quantization option (run in a child, like the job).
ALL_VARIANTS_JOB = """
import sys
import onnx2tf
from nas.export.onnx2tf_job import onnx_input_name, tf_input_name
onnx_path, out_dir, calibration = sys.argv[1:4]
onnx2tf.convert(input_onnx_file_path=onnx_path, output_folder_path=out_dir,
                copy_onnx_input_output_names_to_tflite=True, non_verbose=True,
                output_integer_quantized_tflite=True, quant_type="per-channel",
                custom_input_op_name_np_data_path=[[tf_input_name(onnx_input_name(onnx_path)), calibration, 0.0, 1.0]])
"""


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="+", default=["litedepth", "fastdepth"], choices=sorted(PRESETS))
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--workdir", type=Path, default=Path("results/benchmarks/conversion_cost"),
                   help="where the models are kept (git-ignored)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/conversion_cost.json"))
    return p.parse_args()


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def child_env() -> dict[str, str]:
    """As the job's: the `onnxsim` beside this interpreter first on PATH, no GPU, quiet TensorFlow."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
            "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}


def run_all_variants(onnx_path: Path, calibration: np.ndarray, sample: np.ndarray, keep: Path) -> Path:
    """onnx2tf with its quantization option in a child; its int8 (float I/O) file copied to `keep`."""
    with tempfile.TemporaryDirectory(prefix="nas-allvariants-") as tmp:
        work = Path(tmp)
        np.save(work / SAMPLE_FILE, sample)
        np.save(work / "calibration.npy", check_calibration(calibration, onnx_input_hw(onnx_path)))
        model_copy = work / "model.onnx"
        model_copy.write_bytes(onnx_path.read_bytes())
        proc = subprocess.run([sys.executable, "-c", ALL_VARIANTS_JOB, str(model_copy), str(work / "tf"),
                               str(work / "calibration.npy")], cwd=work, env=child_env(), capture_output=True,
                              text=True)
        int8 = work / "tf" / "model_integer_quant.tflite"
        if proc.returncode != 0 or not int8.exists():
            raise RuntimeError(f"onnx2tf all-variants run failed: {(proc.stdout + proc.stderr)[-800:]}")
        keep.write_bytes(int8.read_bytes())
        return keep


def timed(fn) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def max_prediction_gap(a: Path, b: Path, height: int, width: int) -> float:
    """Largest |depth_a - depth_b| (metres) over two held-out synthetic scenes."""
    model_a, model_b = TFLiteModel(a), TFLiteModel(b)
    gap = 0.0
    for seed in (HELD_OUT_SEED, HELD_OUT_SEED + 1):
        rgb, _ = render_scene(seed, width, height)
        gap = max(gap, float(np.max(np.abs(model_a.predict(rgb) - model_b.predict(rgb)))))
    return gap


def bench_preset(name: str, args: argparse.Namespace) -> dict[str, Any]:
    folder = args.workdir / name
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = DepthNet(PRESETS[name])
    torch.nn.init.normal_(model.head.conv.weight, std=0.05)  # as export_arch: the output varies
    onnx_path = export_onnx(model.eval(), folder / "model.onnx", args.height, args.width)
    rgb, _ = render_scene(0, args.width, args.height)
    sample = calibration_sample([rgb])
    calibration = calibration_scenes(0, args.height, args.width)
    steps = {
        "all_variants": lambda: run_all_variants(onnx_path, calibration, sample, folder / "all_variants_int8.tflite"),
        "int8_only": lambda: convert_to_tflite(onnx_path, folder / "int8_only.tflite", sample, precision="int8",
                                               calibration=calibration),
        "fp32": lambda: convert_to_tflite(onnx_path, folder / "fp32.tflite", sample),
        "import": lambda: subprocess.run([sys.executable, "-c", "import onnx2tf"], env=child_env(), check=True),
    }
    seconds: dict[str, list[float]] = {path: [] for path in PATHS}
    for round_no in range(args.rounds):
        order = PATHS[round_no % len(PATHS):] + PATHS[:round_no % len(PATHS)]
        for path in order:
            elapsed, _ = timed(steps[path])
            seconds[path].append(round(elapsed, 2))
            log(f"{name} round {round_no + 1}: {path} {elapsed:.1f} s")
    ours, reference = folder / "int8_only.tflite", folder / "all_variants_int8.tflite"
    medians = {path: statistics.median(values) for path, values in seconds.items()}
    return {"preset": name, "seconds": seconds, "median_s": medians,
            "int8_speedup": medians["all_variants"] / medians["int8_only"],
            "int8_over_fp32": medians["int8_only"] / medians["fp32"],
            "same_file": sha256_file(ours) == sha256_file(reference),
            "int8_bytes": {"int8_only": ours.stat().st_size, "all_variants": reference.stat().st_size},
            "max_prediction_gap_m": max_prediction_gap(ours, reference, args.height, args.width)}


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| preset | all variants s | int8 only s | fp32 s | import onnx2tf s | int8 speed-up | int8 / fp32 "
             "| same file | max prediction gap m |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["median_s"]
        lines.append(f"| {r['preset']} | {m['all_variants']:.1f} | {m['int8_only']:.1f} | {m['fp32']:.1f} "
                     f"| {m['import']:.1f} | {r['int8_speedup']:.2f}× | {r['int8_over_fp32']:.2f} "
                     f"| {'yes' if r['same_file'] else 'no'} | {r['max_prediction_gap_m']:.2g} |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    started = datetime.now(timezone.utc)
    rows = [bench_preset(name, args) for name in args.presets]
    result = {"benchmark": "conversion_cost", "date": started.isoformat(timespec="seconds"),
              "command": " ".join(["benchmarks/conversion_cost.py", *sys.argv[1:]]),
              "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "load_avg_end": os.getloadavg()},
              "height": args.height, "width": args.width, "rounds": args.rounds, "presets": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
