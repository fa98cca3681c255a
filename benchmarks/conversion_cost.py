"""What a conversion costs a trial, and what the worker's conversion server takes off it.

Latency-first search converts each new graph twice: untrained, to time it before training
(`time_before_training`), and trained, to score and ship it. A conversion runs onnx2tf in a process of
its own. Importing onnx2tf (TensorFlow and onnxsim with it) converts nothing; the conversion server
(`nas/export/conversion_server.py`) imports once per worker and forks a child per conversion.

Part 1 (`convert`), per arch (a preset's name or an arch's JSON) and precision (untrained weights,
640×480, int8 calibrated on 8 synthetic scenes), in interleaved rounds so machine load hits every path
alike, times:
- `fresh`: a new interpreter per conversion, importing everything itself (every conversion before);
- `server`: a child forked from the warm server (every conversion after the worker's first);
- `import`: a fresh interpreter that only imports onnx2tf and onnxsim, the fixed cost the server takes off;
and checks that both paths write the same `.tflite` (file hash).

Part 2 (`kept_trial`), LiteDepth fp32: one kept trial in steady state: train at the quick budget's
shape (150 AdamW steps, batch 8, whole synthetic frames at 160×120; the real loop, without the pruner's
validation), then convert the trained network and, with timing on, the next candidate's untrained one.
Modes: `untimed_fresh` (no timing before training, fresh children: the kept trial the issue compares
against), `timed_fresh` (timing on, fresh children), `timed_server` (timing on, the server: now).

    .venv/bin/python benchmarks/conversion_cost.py [--archs litedepth fastdepth] [--rounds 2]
                                                   [--trial-rounds 2] [--parts convert kept_trial]

Writes benchmarks/results/conversion_cost/<date>.json (or --out) and prints Markdown tables for
benchmarks/conversion_cost.md. Results of earlier versions of this script (onnx2tf's own `onnxsim` runs
against the in-process simplifier, spare children; the int8-only conversion) are indexed on that page.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import results_path, write_result  # noqa: E402
from nas.config import BUDGETS  # noqa: E402
from nas.data.dataset import DepthSplit  # noqa: E402
from nas.data.synth import render_scene  # noqa: E402
from nas.export.onnx_export import export_onnx  # noqa: E402
from nas.export.pipeline import calibration_scenes  # noqa: E402
from nas.export.conversion_server import CONVERSIONS, ConversionServer, child_env, run_fresh  # noqa: E402
from nas.export.tflite_convert import calibration_sample, convert_to_tflite  # noqa: E402
from nas.infra.files import sha256_file  # noqa: E402
from nas.models import DepthNet  # noqa: E402
from nas.presets import PRESETS, resolve_arch  # noqa: E402
from nas.train.loop import train  # noqa: E402

PATHS = ("fresh", "server", "import")
SERVER_RUN = ConversionServer.run


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", nargs="+", default=["litedepth", "fastdepth"], help="preset names or arch JSON")
    p.add_argument("--precisions", nargs="+", default=["fp32", "int8"], choices=["fp32", "int8"])
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--trial-rounds", type=int, default=2, help="rounds of part 2")
    p.add_argument("--parts", nargs="+", default=["convert", "kept_trial"], choices=["convert", "kept_trial"])
    p.add_argument("--workdir", type=Path, default=Path("results/benchmarks/conversion_cost"),
                   help="where the models are kept (git-ignored)")
    p.add_argument("--out", type=Path, default=None,
                   help="result file (default: benchmarks/results/conversion_cost/<UTC date and time>.json)")
    return p.parse_args()


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def convert(onnx_path: Path, out_path: Path, sample: np.ndarray, precision: str,
            calibration: np.ndarray | None, server: bool) -> Path:
    """One conversion as a trial makes it, forked from the warm server or in a fresh interpreter."""
    ConversionServer.run = SERVER_RUN if server else (lambda self, cwd, argv, timeout_s: run_fresh(cwd, argv, timeout_s))
    try:
        return convert_to_tflite(onnx_path, out_path, sample, precision=precision,
                                 calibration=calibration if precision == "int8" else None)
    finally:
        ConversionServer.run = SERVER_RUN


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def untrained_onnx(arch: str, folder: Path, height: int, width: int, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = DepthNet(resolve_arch(arch))
    torch.nn.init.normal_(model.head.conv.weight, std=0.05)  # as export_arch: the output varies
    return export_onnx(model.eval(), folder / f"model-{seed}.onnx", height, width)


def bench_convert(index: int, arch: str, precision: str, args: argparse.Namespace) -> dict[str, Any]:
    folder = args.workdir / f"arch{index}" / precision
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = untrained_onnx(arch, folder, args.height, args.width)
    rgb, _ = render_scene(0, args.width, args.height)
    sample = calibration_sample([rgb])
    calibration = calibration_scenes(0, args.height, args.width)
    outputs = {path: folder / f"{path}.tflite" for path in PATHS if path != "import"}
    convert(onnx_path, folder / "warm-up.tflite", sample, precision, calibration, True)  # the server is up, imported
    imports = "import onnx2tf, onnxsim"
    steps = {
        "fresh": lambda: timed(lambda: convert(onnx_path, outputs["fresh"], sample, precision, calibration, False)),
        "server": lambda: timed(lambda: convert(onnx_path, outputs["server"], sample, precision, calibration, True)),
        "import": lambda: timed(lambda: subprocess.run([sys.executable, "-c", imports], env=child_env(), check=True)),
    }
    seconds: dict[str, list[float]] = {path: [] for path in PATHS}
    for round_no in range(args.rounds):
        order = PATHS[round_no % len(PATHS):] + PATHS[:round_no % len(PATHS)]
        for path in order:
            elapsed = steps[path]()
            seconds[path].append(round(elapsed, 2))
            log(f"{arch[:40]} {precision} round {round_no + 1}: {path} {elapsed:.1f} s")
    medians = {path: statistics.median(values) for path, values in seconds.items()}
    return {"arch": arch, "precision": precision, "seconds": seconds, "median_s": medians,
            "speedup_server": medians["fresh"] / medians["server"],
            "same_file": sha256_file(outputs["fresh"]) == sha256_file(outputs["server"]),
            "server_starts": CONVERSIONS.starts}


def synthetic_split(count: int, width: int, height: int) -> DepthSplit:
    scenes = [render_scene(seed, width, height) for seed in range(count)]
    return DepthSplit(np.stack([s[0] for s in scenes]), np.stack([s[1] for s in scenes]),
                      [f"s{i}" for i in range(count)])


def kept_trial(mode: str, onnx_next: Path, split: DepthSplit, sample: np.ndarray, args: argparse.Namespace,
               folder: Path) -> dict[str, float]:
    """One kept trial's training and its conversions (this network trained; with timing, the next one untrained)."""
    budget = BUDGETS["quick"]
    torch.manual_seed(0)
    model = DepthNet(PRESETS["litedepth"])
    server = mode.endswith("server")
    start = time.perf_counter()
    train(model, split, budget, device=torch.device("cpu"))
    trained_at = time.perf_counter()
    trained_onnx = export_onnx(model.eval(), folder / f"trained-{mode}.onnx", args.height, args.width)
    exported_at = time.perf_counter()
    convert(trained_onnx, folder / f"trained-{mode}.tflite", sample, "fp32", None, server)
    deployed_at = time.perf_counter()
    if mode.startswith("timed"):
        convert(onnx_next, folder / f"next-{mode}.tflite", sample, "fp32", None, server)
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
    modes = ("untimed_fresh", "timed_fresh", "timed_server")
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    for round_no in range(args.trial_rounds):
        for mode in modes[round_no % 3:] + modes[:round_no % 3]:
            figures = {k: round(v, 2) for k, v in kept_trial(mode, onnx_next, split, sample, args, folder).items()}
            runs[mode].append(figures)
            log(f"kept trial round {round_no + 1}, {mode}: {figures}")
    medians = {mode: {k: statistics.median(r[k] for r in rows) for k in rows[0]} for mode, rows in runs.items()}
    return {"preset": "litedepth", "precision": "fp32", "budget": budget.model_dump(), "runs": runs,
            "median": medians, "server_starts": CONVERSIONS.starts,
            "total_over_untimed_fresh": {mode: medians[mode]["total_s"] / medians["untimed_fresh"]["total_s"]
                                         for mode in modes}}


def markdown(rows: list[dict[str, Any]], trial: dict[str, Any] | None) -> str:
    lines = [] if not rows else ["| arch | precision | fresh child s | forked from the server s | import s | speed-up "
                                 "| same file |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["median_s"]
        lines.append(f"| {r['arch'][:40]} | {r['precision']} | {m['fresh']:.1f} | {m['server']:.1f} | {m['import']:.1f} "
                     f"| {r['speedup_server']:.2f}× | {'yes' if r['same_file'] else 'NO'} |")
    if trial:
        lines += [""] * bool(lines) + ["| kept trial (LiteDepth fp32) | train s | trained conversion s "
                                       "| next untrained conversion s | total s | / untimed |", "|---|---|---|---|---|---|"]
        for mode, m in trial["median"].items():
            lines.append(f"| {mode} | {m['train_s']:.1f} | {m['convert_trained_s']:.1f} "
                         f"| {m['convert_next_untrained_s']:.1f} | {m['total_s']:.1f} "
                         f"| {trial['total_over_untimed_fresh'][mode]:.2f} |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    out = args.out or results_path("conversion_cost")
    started = datetime.now(timezone.utc)
    rows = [bench_convert(index, arch, precision, args) for index, arch in enumerate(args.archs)
            for precision in args.precisions if "convert" in args.parts]
    trial = bench_kept_trial(args) if "kept_trial" in args.parts else None
    result = {"started": started.isoformat(timespec="seconds"), "load_avg_end": os.getloadavg(),
              "height": args.height, "width": args.width, "rounds": args.rounds,
              "convert": rows, "kept_trial": trial}
    write_result("conversion_cost", result, path=out)
    print(markdown(rows, trial))


if __name__ == "__main__":
    main()
