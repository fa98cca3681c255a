"""How faithful is the search's proxy? A study at the search budget, re-trained several times longer.

For each arm (`distill`: search and re-training with the teacher; `no-distill`: both without), on the
synthetic data:
1. a study of `--trials` architectures spanning the space at `--budget` (random sampler, no seed presets,
   no pruning, no latency screen, so every sampled architecture is trained and scored);
2. `nas proxy-check` of `--k` of its trials (default: all) at a budget `--factor` times longer (the search
   budget with steps × factor, same resolution and data), through `nas.commands.proxy_check.check.proxy_check`.

Writes benchmarks/results/proxy_fidelity/<date>.json (or --out): per arm, the proxy check's summary (Kendall τ with
its bootstrap interval and p-value, Spearman ρ of si-RMSE and Final Score, where the search's best lands, the
pairs) and the wall time of each step. Every step resumes: a rerun continues the study and re-trains only
what is missing.

Usage:
  python benchmarks/proxy_fidelity.py [--budget quick] [--factor 4] [--trials 8] [--k K] [--arms distill no-distill]
                                      [--space search_spaces/mai2021.yaml] [--work results/benchmarks/proxy_fidelity]
A smoke-sized dry run (minutes): --budget smoke --factor 2 --trials 3 --space search_spaces/smoke.yaml
  --arms no-distill --synth-train 8 --synth-val 2 --out /tmp/proxy_fidelity.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from nas.config import BUDGETS, REPO_ROOT, Budget, RunConfig, load_config
from nas.commands.proxy_check.check import proxy_check, ranked_trials
from nas.commands.run.search import run_search

from common import results_path, write_result

ARMS = {"distill": True, "no-distill": False}


def longer_budget(name: str, factor: int) -> Budget:
    """The search budget with `factor` times the steps: only the training length differs from the search."""
    base = BUDGETS[name]
    return base.model_copy(update={"name": f"{name}-x{factor}", "steps": base.steps * factor})


def arm_config(args: argparse.Namespace, arm: str) -> RunConfig:
    return load_config(None, results=args.work / "shared", storage=f"sqlite:///{(args.work / 'nas.db').as_posix()}",
                       study=f"fidelity-{arm}", space=args.space, budget=args.budget, trials=args.trials,
                       sampler="random", baselines="none", pruner="none", latency_screen=False,
                       distill=ARMS[arm], seed=args.seed, synth_train=args.synth_train, synth_val=args.synth_val)


def run_arm(args: argparse.Namespace, arm: str) -> dict:
    config = arm_config(args, arm)
    started = time.perf_counter()
    study = run_search(config)
    search_s = time.perf_counter() - started
    complete = len(ranked_trials(study))
    budget = longer_budget(args.budget, args.factor)
    started = time.perf_counter()
    summary = proxy_check(config, min(args.k or complete, complete), budget, args.work / f"{config.study}.json")
    return {"study": config.study, "distill": config.distill, "search_budget": args.budget,
            "check_budget": budget.model_dump(), "complete_trials": complete,
            "search_seconds_this_run": round(search_s, 1),
            "check_seconds_this_run": round(time.perf_counter() - started, 1), "proxy_check": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="quick", choices=sorted(BUDGETS), help="the search's budget")
    parser.add_argument("--factor", type=int, default=4, help="the check trains this many times longer")
    parser.add_argument("--trials", type=int, default=8, help="architectures in each arm's study")
    parser.add_argument("--k", type=int, default=None, help="trials to re-train (default: every complete one)")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--space", type=Path, default=REPO_ROOT / "search_spaces" / "mai2021.yaml")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--synth-train", type=int, default=160)
    parser.add_argument("--synth-val", type=int, default=16)
    parser.add_argument("--work", type=Path, default=Path("results/benchmarks/proxy_fidelity"))
    parser.add_argument("--out", type=Path, default=None,
                        help="result file (default: benchmarks/results/proxy_fidelity/<UTC date and time>.json)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    out = args.out or results_path("proxy_fidelity")
    arms = {arm: run_arm(args, arm) for arm in args.arms}
    result = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "arms": arms}
    write_result("proxy_fidelity", result, path=out)
    for arm, figures in arms.items():
        s = figures["proxy_check"]
        print(f"{arm}: {s['k']} trials, si-RMSE tau {s['si_rmse']['kendall_tau']} "
              f"{s['si_rmse']['kendall_tau_interval']}, Final Score tau {s['final_score']['kendall_tau']} "
              f"{s['final_score']['kendall_tau_interval']}"
              + (f" (at one latency per graph: {s['final_score_one_latency']['kendall_tau']} "
                 f"{s['final_score_one_latency']['kendall_tau_interval']})" if s.get("latency_remeasured") else "")
              + f", search's best re-trained rank "
              f"{s['search_best_retrained_rank']}")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
