"""Does a model's latency depend on its weights, or only on its graph? And what does int8 buy?

The latency cache and the search time each architecture once, with whatever weights it has; that is
only sound if the weights do not change the figure. For a few seed presets at 640×480 this exports
each network twice, with untrained weights (seed 0, as `nas arch export` does) and with "trained"
ones, each in fp32 and int8, and times every file with the local runner (hardware/runner.py):

- untrained: seed 0, random head (std 0.05), BN statistics at their initial values (mean 0, var 1);
- trained: seed 1 (every weight different), then a few Adam steps on synthetic scenes in train
  mode, then BN running statistics re-estimated on synthetic scenes (cumulative average), so BN
  folds into the convs with the uneven scales and shifts a trained network has.

Files are timed in interleaved rounds (each round times every file once, the order rotated per
round), so load on this shared machine hits every file alike; per file the figure is the median of
its round medians. int8 models are calibrated on synthetic scenes (`nas.export.pipeline`); their
error against ONNX on held-out scenes is reported beside the timings.

    .venv/bin/python benchmarks/latency_weights.py [--rounds 7] [--runs 20] [--threads 2]

Writes benchmarks/results/latency_weights/<date>.json (or --out) and prints a Markdown table (for
benchmarks/latency_weights.md); `--summarize-only --out FILE` recomputes summary and table from the raw
per-round figures of that file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nas.arch import Arch  # noqa: E402
from nas.data.synth import render_scene  # noqa: E402
from nas.export import PRECISIONS, ExportError  # noqa: E402
from nas.export.onnx_export import check_onnx_parity, export_onnx  # noqa: E402
from nas.export.pipeline import calibration_scenes  # noqa: E402
from nas.export.tflite_convert import (calibration_sample, check_quantized_parity, convert_to_tflite,  # noqa: E402
                                       fp32_companion)
from nas.models import DepthNet, count_macs, count_params  # noqa: E402
from nas.presets import PRESETS  # noqa: E402

from common import results_path, write_result  # noqa: E402
from helpers import time_once, untrained_model  # noqa: E402

NAME = "latency_weights"
WEIGHTS = ("untrained", "trained")
TRAIN_STEPS, TRAIN_BATCH, TRAIN_HW, TRAIN_LR = 5, 2, (240, 320), 1e-3
BN_SCENES = 4
HELD_OUT_SEED = 1000  # parity scenes: far from the seeds calibration and training use


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="+", default=["litedepth", "tencent_gylab", "airia_rfdb"],
                   choices=sorted(PRESETS))
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--workdir", type=Path, default=Path("results/benchmarks/latency_weights"),
                   help="where the exported models are kept (git-ignored)")
    p.add_argument("--out", type=Path, default=None,
                   help="result file (default: benchmarks/results/latency_weights/<UTC date and time>.json)")
    p.add_argument("--summarize-only", action="store_true",
                   help="recompute the summary and table of an existing --out file from its raw figures")
    return p.parse_args()


def log(message: str) -> None:
    """Progress on stderr with a timestamp: the run takes tens of minutes."""
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def scene_batch(seeds: range, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic RGB (N, 3, H, W) 0..255 and depth (N, 1, H, W) metres, 0 where unknown."""
    scenes = [render_scene(seed, width, height) for seed in seeds]
    rgb = torch.from_numpy(np.stack([s[0] for s in scenes]).transpose(0, 3, 1, 2).astype(np.float32))
    depth = torch.from_numpy(np.stack([s[1] for s in scenes]).astype(np.float32) / 1000.0)[:, None]
    return rgb, depth


def trained_model(arch: Arch) -> torch.nn.Module:
    """Seed 1, a few Adam steps (L1 on known depth), then BN statistics re-estimated on scenes.

    Not a good model, but one whose every weight and every folded BN scale and shift differs from
    the untrained one the way training makes them differ, which is what the latency could see.
    """
    torch.manual_seed(1)
    model = DepthNet(arch)
    torch.nn.init.normal_(model.head.conv.weight, std=0.05)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=TRAIN_LR)
    for step in range(TRAIN_STEPS):
        rgb, depth = scene_batch(range(500 + step * TRAIN_BATCH, 500 + (step + 1) * TRAIN_BATCH), *TRAIN_HW)
        known = depth > 0
        loss = (model(rgb) - depth).abs()[known].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the scenes below
    with torch.no_grad():
        for first in range(700, 700 + BN_SCENES, 2):  # pairs: BN after a global pool needs two values
            model(scene_batch(range(first, first + 2), *TRAIN_HW)[0])
    return model.eval()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export_variant(preset: str, weights: str, height: int, width: int, folder: Path) -> list[dict[str, Any]]:
    """ONNX once, then an fp32 and an int8 conversion, each timed; one record per precision."""
    arch = PRESETS[preset]
    model = untrained_model(arch) if weights == "untrained" else trained_model(arch)
    folder.mkdir(parents=True, exist_ok=True)
    rgb, _ = render_scene(0, width, height)
    sample_nchw = rgb.transpose(2, 0, 1)[None].astype(np.float32)
    onnx_path = export_onnx(model, folder / "model.onnx", height, width)
    check_onnx_parity(model, onnx_path, sample_nchw, 1e-3)
    held_out = calibration_scenes(HELD_OUT_SEED, height, width, 2).transpose(0, 3, 1, 2).astype(np.float32)
    base = {"preset": preset, "weights": weights, "params": count_params(model),
            "macs": count_macs(model, height, width)}
    records = []
    for precision in PRECISIONS:
        record = {**base, "precision": precision}
        out = folder / f"{precision}.tflite"
        calibration = calibration_scenes(0, height, width) if precision == "int8" else None
        start = time.perf_counter()
        try:
            convert_to_tflite(onnx_path, out, calibration_sample([rgb]), log_path=folder / f"onnx2tf-{precision}.log",
                              precision=precision, calibration=calibration)
        except ExportError as exc:
            log(f"{preset}/{weights}/{precision}: {exc}")
            records.append({**record, "error": str(exc)})
            continue
        record.update({"file": str(out), "bytes": out.stat().st_size, "sha256": sha256(out),
                       "convert_seconds": round(time.perf_counter() - start, 1)})
        if precision == "int8":
            twin = fp32_companion(out)
            record["fp32_twin_sha256"] = sha256(twin)
            record.update({f"vs_onnx_{k}": v for k, v in check_quantized_parity(out, onnx_path, held_out).items()})
        records.append(record)
        log(f"{preset}/{weights}/{precision}: {record['bytes'] / 1e6:.2f} MB in {record['convert_seconds']:.0f} s")
    if len(records) == 2 and "fp32_twin_sha256" in records[1] and "sha256" in records[0]:
        # Is the float32 model an int8 run keeps the same file a float32 run writes?
        records[1]["fp32_twin_identical_to_fp32_run"] = records[1]["fp32_twin_sha256"] == records[0]["sha256"]
    return records


def time_interleaved(records: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Round after round, every file once (order rotated): per-round medians, load averages."""
    files = [r for r in records if "file" in r]
    rounds = []
    for index in range(args.rounds):
        order = files[index % len(files):] + files[:index % len(files)]
        rounds.append({"round": index, "loadavg_1m_at_start": round(os.getloadavg()[0], 2)})
        for record in order:
            out = time_once(record["file"], args.threads, args.warmup, args.runs)
            record.setdefault("round_medians_ms", []).append(round(out["median_ms"], 3))
            record.setdefault("round_p90_ms", []).append(round(out["p90_ms"], 3))
            record["input_dtype"], record["output_dtype"] = out.get("input_dtype"), out.get("output_dtype")
            record["runtime"] = f"{out.get('runtime')} {out.get('runtime_version')}"
        log(f"round {index + 1}/{args.rounds} done (load {os.getloadavg()[0]:.2f})")
    for record in files:
        record["median_ms"] = round(statistics.median(record["round_medians_ms"]), 3)
    return rounds


def paired_ratio(numerator: dict[str, Any], denominator: dict[str, Any]) -> list[float] | None:
    """Median, min and max over rounds of numerator / denominator latency, taken round by round.

    Both files of a pair were timed in the same round, under the same load, so the per-round ratio
    is steadier than a ratio of overall medians when the machine is shared.
    """
    a, b = numerator.get("round_medians_ms"), denominator.get("round_medians_ms")
    if not a or not b:
        return None
    ratios = [x / y for x, y in zip(a, b)]
    return [round(statistics.median(ratios), 3), round(min(ratios), 3), round(max(ratios), 3)]


def summarize(records: list[dict[str, Any]], presets: list[str]) -> list[dict[str, Any]]:
    """Per preset and precision: untrained vs trained, int8 speed-up, conversion time, size, error."""
    by_key = {(r["preset"], r["weights"], r["precision"]): r for r in records}
    rows = []
    for preset in presets:
        for precision in PRECISIONS:
            untrained, trained = (by_key.get((preset, w, precision), {}) for w in WEIGHTS)
            row: dict[str, Any] = {"preset": preset, "precision": precision}
            for weights, rec in zip(WEIGHTS, (untrained, trained)):
                fp32 = by_key.get((preset, weights, "fp32"), {})
                row[f"{weights}_ms"] = rec.get("median_ms")
                row[f"{weights}_convert_s"] = rec.get("convert_seconds")
                row[f"{weights}_mb"] = round(rec["bytes"] / 1e6, 3) if "bytes" in rec else None
                row[f"{weights}_speedup_vs_fp32"] = paired_ratio(fp32, rec)  # [median, min, max]
                row[f"{weights}_si_rmse_vs_onnx"] = rec.get("vs_onnx_si_rmse")
            row["trained_over_untrained"] = paired_ratio(trained, untrained)  # [median, min, max]
            rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """The page's table: one line per preset and precision; ratios as median (min–max over rounds)."""
    def fmt(value: Any, spec: str) -> str:
        return "–" if value is None else format(value, spec)

    def ratio(value: list[float] | None) -> str:
        return "–" if value is None else f"{value[0]:.2f} ({value[1]:.2f}–{value[2]:.2f})"

    lines = ["| preset | precision | untrained ms | trained ms | trained / untrained | speed-up vs fp32, "
             "untrained | speed-up vs fp32, trained | convert s (untr. / trained) | MB (untr. / trained) "
             "| int8 si-RMSE vs ONNX (untr. / trained) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['preset']} | {r['precision']} | {fmt(r['untrained_ms'], '.1f')} | {fmt(r['trained_ms'], '.1f')} "
            f"| {ratio(r['trained_over_untrained'])} | {ratio(r['untrained_speedup_vs_fp32'])} "
            f"| {ratio(r['trained_speedup_vs_fp32'])} "
            f"| {fmt(r['untrained_convert_s'], '.0f')} / {fmt(r['trained_convert_s'], '.0f')} "
            f"| {fmt(r['untrained_mb'], '.2f')} / {fmt(r['trained_mb'], '.2f')} "
            f"| {fmt(r['untrained_si_rmse_vs_onnx'], '.2g')} / {fmt(r['trained_si_rmse_vs_onnx'], '.2g')} |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    if args.summarize_only:
        if args.out is None:
            raise SystemExit("--summarize-only needs --out: the result file to summarise again")
        result = json.loads(args.out.read_text())
        result["summary"] = summarize(result["models"], list(dict.fromkeys(r["preset"] for r in result["models"])))
        # The figures were measured under the file's own stamp; this invocation only summarised them.
        measured = {key: result.pop(key) for key in ("commit", "machine", "command", "date") if key in result}
        result.setdefault("measured", measured)
        write_result(NAME, result, path=args.out)
        print(markdown(result["summary"]))
        return
    out = args.out or results_path(NAME)
    started = datetime.now(timezone.utc)
    records: list[dict[str, Any]] = []
    for preset in args.presets:
        for weights in WEIGHTS:
            log(f"{preset}/{weights}: exporting")
            records += export_variant(preset, weights, args.height, args.width, args.workdir / preset / weights)
    rounds = time_interleaved(records, args)
    rows = summarize(records, args.presets)
    result = {
        "started": started.isoformat(timespec="seconds"),
        "duration_s": round((datetime.now(timezone.utc) - started).total_seconds()),
        "machine": {"runtime": next((r["runtime"] for r in records if "runtime" in r), None)},
        "settings": {"height": args.height, "width": args.width, "threads": args.threads, "rounds": args.rounds,
                     "warmup": args.warmup, "runs": args.runs,
                     "trained": f"seed 1, {TRAIN_STEPS} Adam steps (lr {TRAIN_LR:g}, batch {TRAIN_BATCH}, "
                                f"{TRAIN_HW[0]}x{TRAIN_HW[1]} synthetic scenes, L1 on known depth), then BN running "
                                f"statistics re-estimated on {BN_SCENES} scenes",
                     "untrained": "seed 0, head weights N(0, 0.05), BN statistics at init",
                     "int8": "onnx2tf per-channel integer quantization, float32 I/O, 8 synthetic calibration scenes"},
        "summary": rows,
        "rounds": rounds,
        "models": records,
    }
    write_result(NAME, result, path=out)
    print(markdown(rows))


if __name__ == "__main__":
    main()
