"""Does distillation help a briefly trained candidate, and what does it cost per step?

The FastDepth (SMART) and Tencent GY-Lab presets are trained with one budget, with and without the
cached teacher (lambda x distillation term), over several seeds, on synthetic data. Reported per preset
and mode: validation si-RMSE (PyTorch model, mean over images, at the training resolution) as mean ±
std over seeds, and seconds per training step; the difference of the latter is what distillation
costs (the teacher is cached, so only the extra loss terms and the map's augmentation remain).

    .venv/bin/python benchmarks/distillation.py --seeds 3 --steps 100

Writes benchmarks/results/distillation/<date>.json (or --out), the printed table included, and the table
as distillation.txt in --work (beside the data set and teacher it makes once). Runs with and
without the teacher are interleaved per seed, so a busy machine slows both alike; timings on a shared
CPU still swing, so read the per-step cost with its spread.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nas.config import Budget  # noqa: E402
from nas.data.dataset import load_split  # noqa: E402
from nas.data.synth import synthesize  # noqa: E402
from nas.models import DepthNet  # noqa: E402
from nas.presets import PRESETS  # noqa: E402
from nas.teacher.distill import DistilledLoss  # noqa: E402
from nas.train.loop import supervised, train, validate  # noqa: E402
from nas.teacher import (align_to_split, ensure_cache, ensure_teacher, folder_lock,  # noqa: E402
                               resolve_teacher)

from common import results_path, write_result  # noqa: E402

console = Console(stderr=True)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=Path("results/benchmarks"),
                   help="where the synthetic data set and the teacher are made once (git-ignored)")
    p.add_argument("--out", type=Path, default=None,
                   help="result file (default: benchmarks/results/distillation/<UTC date and time>.json)")
    p.add_argument("--data", type=Path, default=None, help="data set root (default: synthetic, made once under --work)")
    p.add_argument("--synth-train", type=int, default=160)
    p.add_argument("--synth-val", type=int, default=32)
    p.add_argument("--teacher", type=Path, default=None,
                   help="teacher folder (default: the embedded default's teacher recipe, trained once under --work)")
    p.add_argument("--teacher-budget", default="quick", choices=("smoke", "quick", "full"))
    p.add_argument("--presets", nargs="+", default=["fastdepth", "tencent_gylab"], choices=sorted(PRESETS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--height", type=int, default=96)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--lambda", dest="weight", type=float, default=0.5, help="distillation weight")
    return p.parse_args()


def ensure_data(args: argparse.Namespace) -> Path:
    """The benchmark's synthetic set at 320×240 (cheap to render; the runs train at --height×--width)."""
    if args.data is not None:
        return args.data
    root = args.work / "distill-data"
    recipe = {"train": args.synth_train, "validation": args.synth_val, "width": 320, "height": 240, "seed": 7}
    marker = root / ".recipe.json"
    if not (marker.is_file() and json.loads(marker.read_text()) == recipe):
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("rendering scenes", total=args.synth_train + args.synth_val)
            synthesize(root, {"train": args.synth_train, "validation": args.synth_val}, seed=7, width=320, height=240,
                       progress=lambda done, total: progress.update(task, completed=done))
        marker.write_text(json.dumps(recipe))
    return root


def _std(values: list[float]) -> float:
    """Sample standard deviation; 0 for a single run."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> None:
    args = parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    out = args.out or results_path("distillation")
    data = ensure_data(args)
    folder = args.teacher or args.work / "distill-teacher"
    t0 = time.perf_counter()
    with folder_lock(folder):
        if args.teacher is None:
            spec, trained = ensure_teacher(folder, data, args.teacher_budget)
        else:
            spec, trained = resolve_teacher(folder), False
        cache = ensure_cache(folder, data, args.height, args.width, spec)
    teacher_seconds = time.perf_counter() - t0
    train_split = load_split(data, "train", (args.width, args.height))
    val = load_split(data, "validation", (args.width, args.height))
    maps = align_to_split(cache, train_split)
    budget = Budget(name="bench", train_height=args.height, train_width=args.width, steps=args.steps,
                    batch_size=args.batch_size, lr=args.lr, eval_points=1)
    device = torch.device("cpu")

    runs: list[dict] = []
    total = len(args.presets) * args.seeds * 2
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("training", total=total)
        for seed in range(args.seeds):
            for preset in args.presets:
                for distill in (False, True):
                    progress.update(task, description=f"{preset} seed {seed} {'distilled' if distill else 'plain'}")
                    torch.manual_seed(seed)  # same initial weights with and without the teacher
                    model = DepthNet(PRESETS[preset])
                    loss_fn = DistilledLoss(args.weight) if distill else supervised
                    result = train(model, train_split, budget, extra_maps={"teacher": maps} if distill else None,
                                   loss_fn=loss_fn, seed=seed, device=device)
                    runs.append({"preset": preset, "seed": seed, "distill": distill,
                                 "val_si_rmse": validate(model, val, device), "train_seconds": result.seconds,
                                 "seconds_per_step": result.seconds / result.steps, "final_loss": result.final_loss})
                    progress.advance(task)

    summary: dict[str, dict] = {}
    for preset in args.presets:
        entry: dict[str, dict] = {}
        for distill in (False, True):
            rows = [r for r in runs if r["preset"] == preset and r["distill"] == distill]
            scores = [r["val_si_rmse"] for r in rows]
            steps = [r["seconds_per_step"] for r in rows]
            entry["distilled" if distill else "plain"] = {
                "si_rmse_mean": statistics.mean(scores), "si_rmse_std": _std(scores),
                "s_per_step_mean": statistics.mean(steps), "s_per_step_std": _std(steps)}
        paired = [d["val_si_rmse"] - p["val_si_rmse"] for p, d in
                  zip(*([r for r in runs if r["preset"] == preset and r["distill"] == m] for m in (False, True)))]
        entry["si_rmse_delta_mean"] = statistics.mean(paired)  # distilled - plain, same seed: < 0 is a gain
        entry["si_rmse_delta_std"] = _std(paired)
        entry["distilled_better_seeds"] = sum(d < 0 for d in paired)
        extra = entry["distilled"]["s_per_step_mean"] - entry["plain"]["s_per_step_mean"]
        entry["extra_ms_per_step"] = extra * 1000
        entry["extra_pct_per_step"] = 100 * extra / entry["plain"]["s_per_step_mean"]
        summary[preset] = entry

    table = Table(title=f"distillation: {args.steps} steps, batch {args.batch_size}, {args.width}×{args.height}, "
                        f"lambda {args.weight}, {args.seeds} seeds; teacher {spec.label} "
                        f"(val si-RMSE {cache.val_metrics.get('si_rmse', float('nan')):.4f})")
    for column in ("preset", "plain si-RMSE", "distilled si-RMSE", "Δ (paired)", "better seeds", "plain ms/step",
                   "distilled ms/step", "extra ms/step"):
        table.add_column(column, justify="left" if column == "preset" else "right")
    for preset, e in summary.items():
        p, d = e["plain"], e["distilled"]
        table.add_row(preset, f"{p['si_rmse_mean']:.4f} ± {p['si_rmse_std']:.4f}",
                      f"{d['si_rmse_mean']:.4f} ± {d['si_rmse_std']:.4f}",
                      f"{e['si_rmse_delta_mean']:+.4f} ± {e['si_rmse_delta_std']:.4f}",
                      f"{e['distilled_better_seeds']}/{args.seeds}",
                      f"{p['s_per_step_mean'] * 1000:.0f} ± {p['s_per_step_std'] * 1000:.0f}",
                      f"{d['s_per_step_mean'] * 1000:.0f} ± {d['s_per_step_std'] * 1000:.0f}",
                      f"{e['extra_ms_per_step']:+.0f} ({e['extra_pct_per_step']:+.1f}%)")
    report = Console(record=True, width=160)
    report.print(table)
    text = report.export_text()
    (args.work / "distillation.txt").write_text(text)
    record = {"torch_threads": torch.get_num_threads(), "table": text, "args": {k: str(v) for k, v in vars(args).items()},
              "data": str(data), "teacher": {"dir": str(folder), "label": spec.label, "trained_now": trained,
                                            "seconds_to_prepare": round(teacher_seconds, 1),
                                            "train_seconds": spec.train_seconds, "fingerprint": cache.fingerprint,
                                            "val_metrics_at_bench_res": cache.val_metrics,
                                            "val_metrics_native": spec.val_metrics},
              "summary": summary, "runs": runs}
    write_result("distillation", record, path=out)
    console.print(f"wrote {out} and {args.work / 'distillation.txt'}")


if __name__ == "__main__":
    main()
