"""Does the Final Score keep rising below 96×128 inside? One network at several internal sizes, one run.

The searches so far put their best networks at the space's smallest internal size (96×128), which is
where the issue asks to extend the space if the score still rises there. This trains fixed networks
(a searched network and LiteDepth) at each internal size, exactly as a trial would
(quick budget, distillation, pixel-scale crops, TFLite at 640×480, no pruning, no screen), then re-times
every model in interleaved rounds with nothing else running and recomputes the Final Scores.

Usage: python benchmarks/internal_size.py [--budget quick] [--sizes 96x128 0.15 0.125 0.1 0.075 0.05]
                                          [--work results/benchmarks/internal_size] [--out FILE]
Writes benchmarks/results/internal_size/<date>.json (or --out).
Resumable: a rerun trains only the variants the study lacks. Sizes outside the mission space are measured
in a copy of it that has them (Optuna samples only a space's choices; a study keeps the choices it began with).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import optuna
import yaml

from common import results_path, write_result
from helpers import arm_config, retime
from nas.arch import Arch
from nas.config import REPO_ROOT
from nas.presets import PRESETS
from nas.commands.run.search import run_search
from nas.trial.study import open_study

MISSION_SPACE = REPO_ROOT / "search_spaces" / "mai2021.yaml"
# A searched network that beat LiteDepth at 96×128 inside (benchmarks/internal_size.md names the search), so
# its score at smaller sizes says whether the space should reach below 96×128.
SEARCHED = Arch(backbone="mobilenetv4_conv_small", depth=5, decoder_channels=(32, 64, 8, 16, 16),
                skips=("concat", "add", "none", "add", "none"), blocks=("rfdb", "srb", "dws5", "dws5", "dws5"),
                ffm=False, upsample="nearest", input_scale="96x128", head="relu", rfdb_esa=True, precision="fp32")


def variants(sizes: list[str]) -> dict[str, Arch]:
    """Label -> network: the searched network at every size, LiteDepth at its own size and the smallest."""
    out = {f"searched@{s}": dataclasses.replace(SEARCHED, input_scale=s) for s in sizes}
    litedepth = PRESETS["litedepth"]
    out[f"litedepth@{litedepth.input_scale}"] = litedepth
    out[f"litedepth@{sizes[-1]}"] = dataclasses.replace(litedepth, input_scale=sizes[-1])
    return out


def space_with_sizes(work: Path, sizes: list[str]) -> Path:
    """The mission space with every measured size among its input scales (Optuna samples only its choices)."""
    space = yaml.safe_load(MISSION_SPACE.read_text())
    choices = space["params"]["input_scale"]["choices"]
    choices += [s for s in sizes if s not in choices]
    path = work / "space.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="quick")
    parser.add_argument("--sizes", nargs="+", default=["96x128", "0.15", "0.125", "0.1", "0.075", "0.05"])
    parser.add_argument("--work", type=Path, default=Path("results/benchmarks/internal_size"))
    parser.add_argument("--out", type=Path, default=None,
                        help="result file (default: benchmarks/results/internal_size/<UTC date and time>.json)")
    parser.add_argument("--retime-rounds", type=int, default=5)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    out = args.out or results_path("internal_size")
    started = time.time()
    wanted = variants(args.sizes)
    config = arm_config(args.work, "internal_size", 0, args.budget, pruner="none", latency_screen=False, trials=len(wanted),
                        space=space_with_sizes(args.work, args.sizes))
    study = open_study(config)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    done = {t.user_attrs.get("variant") for t in complete}
    missing = [label for label in wanted if label not in done]
    queued = {t.user_attrs.get("variant") for t in study.trials if t.state == optuna.trial.TrialState.WAITING}
    for label in [m for m in missing if m not in queued]:  # a run stopped early leaves its variants queued
        study.enqueue_trial(wanted[label].to_params(), user_attrs={"variant": label})
    if missing:  # `trials` is the study-wide target of trained trials
        run_search(config.model_copy(update={"trials": len(complete) + len(missing)}))
    study = open_study(config)
    by_number = {t.number: t for t in study.trials}
    # retime() re-times an arm's top trials: here all of them.
    quiet = retime(args.work, {"internal_size": study}, len(study.trials), args.retime_rounds)["internal_size"]["trials"]
    rows = []
    for row in quiet:
        trial = by_number[row["number"]]
        if trial.user_attrs["variant"] not in wanted:
            continue
        rows.append({"variant": trial.user_attrs["variant"], "si_rmse": row["si_rmse"],
                     "quiet_latency_ms": row["quiet_latency_ms"], "quiet_score": row["quiet_score"],
                     "search_latency_ms": row["search_latency_ms"], "macs": trial.user_attrs.get("macs"),
                     "train_seconds": trial.user_attrs["stage_seconds"].get("train")})
    rows.sort(key=lambda r: list(wanted).index(r["variant"]))
    result = {"budget": args.budget, "sizes": args.sizes, "hours": (time.time() - started) / 3600, "rows": rows}
    write_result("internal_size", result, path=out)
    for r in rows:
        print(f"{r['variant']:>24}  si {r['si_rmse']:.3f}  {r['quiet_latency_ms']:.2f} ms  "
              f"score {r['quiet_score']:.1f}  {(r['macs'] or 0) / 1e6:.0f} MMACs")


if __name__ == "__main__":
    main()
