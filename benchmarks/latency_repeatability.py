"""Does a model get the same latency every time it is timed? Across fresh runner processes, per runner setting.

The search divides by latency, so a figure that swings between timings reorders candidates as much as
accuracy does. This times the same untrained 640×480 `.tflite` files (LiteDepth at 128×160, 48×64 and 24×32
inside, fp32 and int8 at 24×32, a searched network at 48×64) in fresh `hardware/runner.py`
processes, interleaved (file and setting order rotated every round, so every setting sees the same
machine), under each setting:

- `t2-once`: 2 threads, one burst of 5 warm-up + 30 timed invokes (the local profile before this benchmark);
- `t2-best3`: 2 threads, best of 3 bursts 1 s apart (`repeats: 3`, `repeat_gap_s: 1`);
- `t1-once` and `t1-best3`: the same at 1 thread.

Per file and setting: the median figure over the rounds, its spread (max/min and coefficient of
variation over the rounds) and the wall seconds of one runner call.

With `--study`, it asks the same of a finished search instead: every complete trial's `.tflite` is timed
again `--rounds` times (fresh runner processes, the shipped local profile's setting, files interleaved) and
set against the figure the search recorded for it: does a latency taken during a search hold afterwards?

Usage: python benchmarks/latency_repeatability.py [--rounds 10] [--workdir results/benchmarks/latency_floor]
       python benchmarks/latency_repeatability.py --study NAME --storage URL --artifacts DIR [--rounds 5]
                                                  [--out FILE]
Writes benchmarks/results/latency_repeatability/<date>.json (`--study`: <date>-<study>.json) or --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore

from common import results_path, write_result
from helpers import LITEDEPTH, SEARCHED_GHOSTNET_48X64, convert_variants, time_as_profiled, untrained_model
from nas.config import REPO_ROOT
from nas.hardware.profile import DeviceProfile, load_hardware
from nas.report.previews import MODEL_NAME, fetch_artifact

NAME = "latency_repeatability"
# name: (threads, repeats, gap between bursts in seconds); 5 warm-up + 30 timed invokes per burst.
SETTINGS = {"t2-once": (2, 1, 0.0), "t2-best3": (2, 3, 1.0), "t1-once": (1, 1, 0.0), "t1-best3": (1, 3, 1.0)}


def networks() -> dict:
    replace = dataclasses.replace
    return {"litedepth-128x160": lambda: untrained_model(LITEDEPTH),
            "litedepth-48x64": lambda: untrained_model(replace(LITEDEPTH, input_scale="0.1")),
            "litedepth-24x32": lambda: untrained_model(replace(LITEDEPTH, input_scale="0.05")),
            "litedepth-24x32-int8": lambda: untrained_model(replace(LITEDEPTH, input_scale="0.05")),
            "ghostnet-48x64": lambda: untrained_model(SEARCHED_GHOSTNET_48X64)}


def time_fresh(path: Path, profile: DeviceProfile) -> tuple[dict, float]:
    """One runner process with `profile`'s setting: its JSON and the call's wall seconds."""
    start = time.perf_counter()
    out = time_as_profiled(str(path), profile)
    return out, time.perf_counter() - start


def spread(figures: list[float]) -> dict:
    mean = statistics.fmean(figures)
    return {"median_ms": round(statistics.median(figures), 4), "min_ms": round(min(figures), 4),
            "max_ms": round(max(figures), 4), "max_over_min": round(max(figures) / min(figures), 3),
            "cv": round(statistics.pstdev(figures) / mean, 4)}


def retime_study(args: argparse.Namespace) -> dict:
    """Every complete trial's file timed again `args.rounds` times, against the search's own figure."""
    storage = optuna.storages.RDBStorage(args.storage)
    study = optuna.load_study(study_name=args.study, storage=storage)
    store = FileSystemArtifactStore(str(args.artifacts))
    (local,) = load_hardware(REPO_ROOT / "hardware" / "local.yaml")
    scratch = args.workdir / f"retime-{args.study}"
    scratch.mkdir(parents=True, exist_ok=True)
    trials = {}
    for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        path = scratch / f"trial-{trial.number}.tflite"
        if not path.exists() and not fetch_artifact(trial, storage, store, MODEL_NAME, path):
            continue
        trials[trial.number] = {"file": path, "search_ms": trial.user_attrs["latency_ms"],
                                "search_repeats": trial.user_attrs.get("latency", {}).get("repeats"), "again_ms": []}
    numbers = list(trials)
    for index in range(args.rounds):
        for number in numbers[index % len(numbers):] + numbers[:index % len(numbers)]:
            trials[number]["again_ms"].append(round(time_as_profiled(str(trials[number]["file"]), local)["median_ms"], 4))
        print(f"round {index + 1}/{args.rounds}", flush=True)
    rows = {}
    for number, row in trials.items():
        ratios = [again / row["search_ms"] for again in row["again_ms"]]
        rows[number] = {"search_ms": round(row["search_ms"], 4), "search_repeats": row["search_repeats"],
                        "again_ms": row["again_ms"], "median_ratio": round(statistics.median(ratios), 3),
                        "worst_ratio": round(max(ratios, key=lambda r: abs(r - 1)), 3)}
    medians = [r["median_ratio"] for r in rows.values()]
    return {"study": args.study, "storage": args.storage, "setting": {"threads": local.threads, "warmup": local.warmup,
                                                                    "runs": local.runs, "repeats": local.repeats,
                                                                    "repeat_gap_s": local.repeat_gap_s},
            "trials": rows, "median_ratio": round(statistics.median(medians), 3),
            "within_5_percent": sum(abs(r - 1) <= 0.05 for r in medians), "count": len(medians)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--workdir", type=Path, default=Path("results/benchmarks/latency_floor"))
    parser.add_argument("--out", type=Path, default=None,
                        help="result file (default: benchmarks/results/latency_repeatability/<UTC date and time>.json)")
    parser.add_argument("--study", help="re-time this finished study's complete trials instead")
    parser.add_argument("--storage", help="its storage URL (with --study)")
    parser.add_argument("--artifacts", type=Path, help="its artifact folder (with --study)")
    args = parser.parse_args()
    if args.study:
        started = time.perf_counter()
        out = args.out or results_path(NAME, suffix=f"-{args.study}")
        result = {**retime_study(args), "minutes": round((time.perf_counter() - started) / 60, 1)}
        write_result(NAME, result, path=out)
        for number, row in result["trials"].items():
            print(f"trial {number}: search {row['search_ms']:.3f} ms, again {row['again_ms']}, "
                  f"median ratio {row['median_ratio']}")
        print(f"median ratio {result['median_ratio']}, {result['within_5_percent']} of {result['count']} within 5 %")
        return
    out = args.out or results_path(NAME)
    files, _ = convert_variants(networks(), args.workdir)
    (local,) = load_hardware(REPO_ROOT / "hardware" / "local.yaml")
    profiles = {name: local.model_copy(update={"threads": threads, "warmup": 5, "runs": 30, "repeats": repeats,
                                               "repeat_gap_s": gap_s, "quiet_check_s": 0})
                for name, (threads, repeats, gap_s) in SETTINGS.items()}
    names, settings = list(files), list(SETTINGS)
    figures: dict[str, dict[str, list[float]]] = {n: {s: [] for s in settings} for n in names}
    bursts: dict[str, dict[str, list[list[float]]]] = {n: {s: [] for s in settings} for n in names}
    walls: dict[str, list[float]] = {s: [] for s in settings}
    loads = []
    started = time.perf_counter()
    for index in range(args.rounds):
        loads.append(round(os.getloadavg()[0], 2))
        for name in names[index % len(names):] + names[:index % len(names)]:
            for setting in settings[index % len(settings):] + settings[:index % len(settings)]:
                out, wall = time_fresh(files[name], profiles[setting])
                figures[name][setting].append(round(out["median_ms"], 4))
                bursts[name][setting].append(out["repeat_medians_ms"])
                walls[setting].append(wall)
        print(f"round {index + 1}/{args.rounds} (load {os.getloadavg()[0]:.2f})", flush=True)
    rows = {name: {setting: spread(v) for setting, v in by_setting.items()} for name, by_setting in figures.items()}
    per_setting = {s: {"worst_max_over_min": max(rows[n][s]["max_over_min"] for n in names),
                       "mean_cv": round(statistics.fmean(rows[n][s]["cv"] for n in names), 4),
                       "seconds_per_call": round(statistics.median(walls[s]), 2)} for s in settings}
    result = {
        "rounds": args.rounds,
        "minutes": round((time.perf_counter() - started) / 60, 1),
        "settings": {s: {"threads": t, "repeats": r, "repeat_gap_s": g, "warmup": 5, "runs": 30}
                     for s, (t, r, g) in SETTINGS.items()},
        "loadavg_1m_per_round": loads,
        "per_setting": per_setting,
        "files": {n: {s: {**rows[n][s], "figures_ms": figures[n][s], "burst_medians_ms": bursts[n][s]}
                      for s in settings} for n in names},
    }
    write_result(NAME, result, path=out)
    for name in names:
        print(f"{name:22s}", "  ".join(f"{s} {rows[name][s]['median_ms']:.3f} ({rows[name][s]['max_over_min']:.2f}x)"
                                        for s in settings))
    for setting, row in per_setting.items():
        print(setting, row)


if __name__ == "__main__":
    main()
