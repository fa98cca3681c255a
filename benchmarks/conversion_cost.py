"""What a conversion costs a trial, before and after the two changes that make it cheaper.

Latency-first search converts each new graph twice: untrained, to time it before training
(`time_before_training`), and trained, to score and ship it. A conversion is a child process running
onnx2tf. Two of its costs did not convert anything:

- onnx2tf simplifies the ONNX graph by starting the `onnxsim` executable three times, a fresh
  interpreter each; the child now runs the same simplifier in process until the graph stops changing;
- the child imported onnx2tf (TensorFlow with it) after the conversion was asked for; now a spare
  child does that import while the worker trains (`nas/export/spares.py`).

Part 1 (`convert`), per preset and precision (untrained weights, 640×480, int8 calibrated on 8 synthetic
scenes), in interleaved rounds so machine load hits every path alike, times:
- `before`: the child as it was (onnx2tf's three `onnxsim` runs, TensorFlow imported on demand);
- `in_process`: the child simplifying in process, started on demand;
- `spare`: the same child, started 20 s ahead (its import done, as after a training stretch);
- `import`: a child that only imports onnx2tf, the fixed cost a spare takes off;
and checks that every path writes the same `.tflite` (file hash) as `before`.

Part 2 (`kept_trial`), LiteDepth: the conversions and training of one kept trial with timing on, in
steady state: train at the quick budget's shape (150 AdamW steps, batch 8, whole synthetic frames at
160×120; the real loop, without the pruner's validation), then convert the trained network and the
next candidate's untrained one. Modes: `before` (the child as it was), `in_process` (what a CPU-only
worker does now), `spares` (two spares started when training starts, what `pipeline.train_candidate`
does when training runs on a GPU; on a CPU the figure shows what their imports take from training).

    .venv/bin/python benchmarks/conversion_cost.py [--presets litedepth fastdepth] [--rounds 2]
                                                   [--trial-rounds 2] [--parts convert kept_trial]

Writes benchmarks/results/conversion_cost.json and prints Markdown tables for benchmarks/README.md.
(The first run, which measured converting only the int8 variant, is conversion_cost_run1.json.)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from latency_weights import cpu_model  # noqa: E402
from nas.config import BUDGETS  # noqa: E402
from nas.data.dataset import DepthSplit  # noqa: E402
from nas.data.synth import render_scene  # noqa: E402
from nas.export.onnx2tf_job import FP32_FILE, INT8_FILE  # noqa: E402
from nas.export.onnx_export import export_onnx  # noqa: E402
from nas.export.pipeline import calibration_scenes  # noqa: E402
from nas.export.spares import SPARES, child_env  # noqa: E402
from nas.export.tflite_convert import (CALIBRATION_FILE, SAMPLE_FILE, calibration_sample,  # noqa: E402
                                       check_calibration, convert_to_tflite, onnx_input_hw)
from nas.files import sha256_file  # noqa: E402
from nas.models import DepthNet  # noqa: E402
from nas.presets import PRESETS  # noqa: E402
from nas.train.loop import train  # noqa: E402

PATHS = ("before", "in_process", "spare", "import")
SPARE_LEAD_S = 20.0  # how long before the conversion the spare is started in part 1

# The child as it was: onnx2tf runs the `onnxsim` executable (found on PATH) three times.
BEFORE_JOB = "import sys; from nas.export.onnx2tf_job import main; sys.exit(main(*sys.argv[1:], simplify_here=False))"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="+", default=["litedepth", "fastdepth"], choices=sorted(PRESETS))
    p.add_argument("--precisions", nargs="+", default=["fp32", "int8"], choices=["fp32", "int8"])
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--trial-rounds", type=int, default=2, help="rounds of part 2")
    p.add_argument("--parts", nargs="+", default=["convert", "kept_trial"], choices=["convert", "kept_trial"])
    p.add_argument("--workdir", type=Path, default=Path("results/benchmarks/conversion_cost"),
                   help="where the models are kept (git-ignored)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/conversion_cost.json"))
    return p.parse_args()


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def convert_before(onnx_path: Path, out_path: Path, sample: np.ndarray, precision: str,
                   calibration: np.ndarray | None) -> Path:
    """The conversion as it was: a child started on demand, onnx2tf simplifying through `onnxsim` runs."""
    with tempfile.TemporaryDirectory(prefix="nas-before-") as tmp:
        work = Path(tmp)
        np.save(work / SAMPLE_FILE, sample)
        shutil.copyfile(onnx_path, work / "model.onnx")
        argv = [sys.executable, "-c", BEFORE_JOB, str(work / "model.onnx"), str(work / "tf")]
        if precision == "int8":
            np.save(work / CALIBRATION_FILE, check_calibration(calibration, onnx_input_hw(onnx_path)))
            argv.append(str(work / CALIBRATION_FILE))
        env = {**child_env(), "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
        proc = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True)
        produced = work / "tf" / (INT8_FILE if precision == "int8" else FP32_FILE)
        if proc.returncode != 0 or not produced.exists():
            raise RuntimeError(f"the reference conversion failed: {(proc.stdout + proc.stderr)[-800:]}")
        shutil.copyfile(produced, out_path)
    return out_path


def convert_now(onnx_path: Path, out_path: Path, sample: np.ndarray, precision: str,
                calibration: np.ndarray | None) -> Path:
    return convert_to_tflite(onnx_path, out_path, sample, precision=precision,
                             calibration=calibration if precision == "int8" else None)


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def untrained_onnx(name: str, folder: Path, height: int, width: int, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = DepthNet(PRESETS[name])
    torch.nn.init.normal_(model.head.conv.weight, std=0.05)  # as export_arch: the output varies
    return export_onnx(model.eval(), folder / f"model-{seed}.onnx", height, width)


def bench_convert(name: str, precision: str, args: argparse.Namespace) -> dict[str, Any]:
    folder = args.workdir / name / precision
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = untrained_onnx(name, folder, args.height, args.width)
    rgb, _ = render_scene(0, args.width, args.height)
    sample = calibration_sample([rgb])
    calibration = calibration_scenes(0, args.height, args.width)
    outputs = {path: folder / f"{path}.tflite" for path in PATHS if path != "import"}

    def with_spare() -> float:
        SPARES.keep_ready(1)
        time.sleep(SPARE_LEAD_S)  # the training stretch during which the spare imports
        return timed(lambda: convert_now(onnx_path, outputs["spare"], sample, precision, calibration))

    steps = {
        "before": lambda: timed(lambda: convert_before(onnx_path, outputs["before"], sample, precision, calibration)),
        "in_process": lambda: timed(lambda: convert_now(onnx_path, outputs["in_process"], sample, precision,
                                                        calibration)),
        "spare": with_spare,
        "import": lambda: timed(lambda: subprocess.run([sys.executable, "-c", "import onnx2tf"], env=child_env(),
                                                       check=True)),
    }
    seconds: dict[str, list[float]] = {path: [] for path in PATHS}
    for round_no in range(args.rounds):
        order = PATHS[round_no % len(PATHS):] + PATHS[:round_no % len(PATHS)]
        for path in order:
            SPARES.dismiss_all()
            elapsed = steps[path]()
            seconds[path].append(round(elapsed, 2))
            log(f"{name} {precision} round {round_no + 1}: {path} {elapsed:.1f} s")
    medians = {path: statistics.median(values) for path, values in seconds.items()}
    reference = sha256_file(outputs["before"])
    return {"preset": name, "precision": precision, "seconds": seconds, "median_s": medians,
            "speedup_in_process": medians["before"] / medians["in_process"],
            "speedup_spare": medians["before"] / medians["spare"],
            "same_file": {path: sha256_file(out) == reference for path, out in outputs.items()}}


def synthetic_split(count: int, width: int, height: int) -> DepthSplit:
    scenes = [render_scene(seed, width, height) for seed in range(count)]
    return DepthSplit(np.stack([s[0] for s in scenes]), np.stack([s[1] for s in scenes]),
                      [f"s{i}" for i in range(count)])


def kept_trial(mode: str, onnx_next: Path, split: DepthSplit, sample: np.ndarray, args: argparse.Namespace,
               folder: Path) -> dict[str, float]:
    """One kept trial's training and its two conversions (this network trained, the next one untrained)."""
    budget = BUDGETS["quick"]
    torch.manual_seed(0)
    model = DepthNet(PRESETS["litedepth"])
    convert = convert_before if mode == "before" else convert_now
    SPARES.dismiss_all()
    start = time.perf_counter()
    if mode == "spares":
        SPARES.keep_ready(2)  # what pipeline.train_candidate does on a GPU when candidates are timed
    train(model, split, budget, device=torch.device("cpu"))
    trained_at = time.perf_counter()
    trained_onnx = export_onnx(model.eval(), folder / f"trained-{mode}.onnx", args.height, args.width)
    exported_at = time.perf_counter()
    convert(trained_onnx, folder / f"trained-{mode}.tflite", sample, "fp32", None)
    deployed_at = time.perf_counter()
    convert(onnx_next, folder / f"next-{mode}.tflite", sample, "fp32", None)
    done = time.perf_counter()
    return {"train_s": trained_at - start, "onnx_export_s": exported_at - trained_at,
            "convert_trained_s": deployed_at - exported_at, "convert_next_untrained_s": done - deployed_at,
            "total_s": done - start}


def bench_kept_trial(args: argparse.Namespace) -> dict[str, Any]:
    folder = args.workdir / "kept_trial"
    folder.mkdir(parents=True, exist_ok=True)
    budget = BUDGETS["quick"]
    split = synthetic_split(64, budget.train_width, budget.train_height)
    onnx_next = untrained_onnx("litedepth", folder, args.height, args.width, seed=1)
    rgb, _ = render_scene(0, args.width, args.height)
    sample = calibration_sample([rgb])
    modes = ("before", "in_process", "spares")
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    for round_no in range(args.trial_rounds):
        for mode in modes[round_no % 3:] + modes[:round_no % 3]:
            figures = {k: round(v, 2) for k, v in kept_trial(mode, onnx_next, split, sample, args, folder).items()}
            runs[mode].append(figures)
            log(f"kept trial round {round_no + 1}, {mode}: {figures}")
    SPARES.dismiss_all()
    medians = {mode: {k: statistics.median(r[k] for r in rows) for k in rows[0]} for mode, rows in runs.items()}
    return {"preset": "litedepth", "precision": "fp32", "budget": budget.model_dump(), "runs": runs,
            "median": medians, "total_over_before": {mode: medians[mode]["total_s"] / medians["before"]["total_s"]
                                                     for mode in modes}}


def markdown(rows: list[dict[str, Any]], trial: dict[str, Any] | None) -> str:
    lines = [] if not rows else ["| preset | precision | before s | in-process simplify s | + spare child s | import onnx2tf s "
             "| speed-up | same file |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["median_s"]
        lines.append(f"| {r['preset']} | {r['precision']} | {m['before']:.1f} | {m['in_process']:.1f} "
                     f"| {m['spare']:.1f} | {m['import']:.1f} | {r['speedup_spare']:.2f}× "
                     f"| {'yes' if all(r['same_file'].values()) else 'NO'} |")
    if trial:
        lines += [""] * bool(lines) + ["| kept trial (LiteDepth fp32) | train s | trained conversion s | next untrained conversion s "
                  "| total s |", "|---|---|---|---|---|"]
        for mode, m in trial["median"].items():
            lines.append(f"| {mode} | {m['train_s']:.1f} | {m['convert_trained_s']:.1f} "
                         f"| {m['convert_next_untrained_s']:.1f} | {m['total_s']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    started = datetime.now(timezone.utc)
    rows = [bench_convert(name, precision, args) for name in args.presets for precision in args.precisions
            if "convert" in args.parts]
    trial = bench_kept_trial(args) if "kept_trial" in args.parts else None
    result = {"benchmark": "conversion_cost", "date": started.isoformat(timespec="seconds"),
              "command": " ".join(["benchmarks/conversion_cost.py", *sys.argv[1:]]),
              "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "load_avg_end": os.getloadavg()},
              "height": args.height, "width": args.width, "rounds": args.rounds, "spare_lead_s": SPARE_LEAD_S,
              "convert": rows, "kept_trial": trial}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(rows, trial))


if __name__ == "__main__":
    main()
