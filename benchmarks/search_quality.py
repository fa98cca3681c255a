"""Does the search beat the hand-designed networks? Arms of equal wall time on one machine, one run.

Arms (each its own study and SQLite file; data, teacher and latency device shared):
- presets: the seed presets (every precision of the space) trained at the trial budget, never pruned;
- tpe-sN / random-sN: a search from scratch with the default sampler / random sampling, seed N;
- tpe-timed-sN: tpe-sN with each new graph converted and timed untrained before training
  (`time_before_training: true`), so the two show what the timing costs and saves at equal wall time;
- tpe-auto-sN: tpe-sN timing only the new graphs whose predicted latency leaves the screen's decision
  open (`time_before_training: auto`, the default at the quick and full budgets);
- tpe-presets: a search that starts from the presets: the presets arm's finished trials are copied into
  it (marked `copied_from: presets`), then TPE searches for the same wall time as the other arms
  (the presets' own training time is the presets arm's, not counted again);
- tpe-floor-sN: tpe-sN with the accuracy floor `--max-si-rmse` (trials above it infeasible). With
  `--max-si-rmse`, every arm is also judged against that floor (`floor`: trials that meet it, the best
  Final Score among them), so a search without the floor shows what it would have offered.

Usage:
  python benchmarks/search_quality.py [--budget quick] [--wall-minutes 60] [--seeds 0 1]
                                      [--arms presets tpe tpe-timed tpe-auto random tpe-presets tpe-floor]
                                      [--max-si-rmse F] [--work results/benchmarks/search_quality]
                                      [--retime-top 3 --retime-rounds 5]
Writes benchmarks/results/search_quality/<date>.json (or --out) and prints the summary. Every arm is resumable:
rerunning continues a study until its wall time is used (time is read from the trials' own records).

Latency inside a search is timed once per architecture, whenever the trial ran, so load on the
machine (other jobs) can tilt one arm against another. The closing step re-times each arm's top
trials (`--retime-top`, by Final Score) and every preset in interleaved rounds on the same machine,
one file after another, with the shipped local profile's setting (figures re-timed before that
setting changed used 2 threads and one burst: benchmarks/search_quality.md), and recomputes their Final Scores with those latencies: the `quiet_*`
figures compare arms on equal terms.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from statistics import mean, median

import optuna

from common import results_path, write_result
from helpers import arm_config, counts_as_arm_trial, retime
from nas.commands.run.search import run_search
from nas.trial.latency_model import spearman
from nas.trial.baselines import preset_points
from nas.space import load_space
from nas.trial.study import open_study

NAME = "search_quality"


def own_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The trials this arm ran itself (not those copied from the presets arm)."""
    return [t for t in study.trials if "copied_from" not in t.user_attrs]


def elapsed_seconds(study: optuna.Study) -> float:
    """Wall time the study has used so far: first trial start to last trial end (own trials only)."""
    starts = [t.datetime_start for t in own_trials(study) if t.datetime_start]
    ends = [t.datetime_complete for t in own_trials(study) if t.datetime_complete]
    return (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0


def run_arm(args: argparse.Namespace, name: str, seed: int, wall_s: float | None,
            start_from: optuna.Study | None = None, **overrides) -> optuna.Study:
    config = arm_config(args.work, name, seed, args.budget, **overrides)
    study = open_study(config)
    if start_from is not None and not study.trials:
        study.add_trials([copy_trial(t) for t in start_from.trials
                          if t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs.get("preset")])
    left = None if wall_s is None else wall_s - elapsed_seconds(study)
    if left is None or left > 60:
        copied = sum(1 for t in study.trials if "copied_from" in t.user_attrs)
        # The arm's own trained-trial target sizes TPE's random start-up as `nas run --trials` would.
        trials = overrides.get("trials", args.trials + copied)
        run_search(config.model_copy(update={"trials": trials, "timeout": left}))
    return open_study(config)


def copy_trial(trial: optuna.trial.FrozenTrial) -> optuna.trial.FrozenTrial:
    """A finished trial as a new one of another study, marked as copied."""
    return optuna.trial.create_trial(params=trial.params, distributions=trial.distributions, value=trial.value,
                                     user_attrs={**trial.user_attrs, "copied_from": "presets"},
                                     intermediate_values=trial.intermediate_values)


def floor_figures(study: optuna.Study, floor: float) -> dict:
    """The arm's own complete trials judged against an accuracy floor: how many meet it, and the best of those."""
    complete = [t for t in own_trials(study) if t.state == optuna.trial.TrialState.COMPLETE]
    meeting = [t for t in complete if t.user_attrs["si_rmse"] <= floor]
    best = max(meeting, key=lambda t: t.user_attrs["final_score"], default=None)
    return {"max_si_rmse": floor, "complete": len(complete), "meeting": len(meeting),
            "best_score": None if best is None else best.user_attrs["final_score"],
            "best_trial": None if best is None else {"number": best.number, "si_rmse": best.user_attrs["si_rmse"],
                                                     "latency_ms": best.user_attrs["latency_ms"],
                                                     "backbone": best.user_attrs["arch"]["backbone"],
                                                     "input_scale": best.user_attrs["arch"]["input_scale"],
                                                     "precision": best.user_attrs.get("precision")},
            "si_rmse_of_complete": sorted(t.user_attrs["si_rmse"] for t in complete)}


def summarize(study: optuna.Study, presets_only: bool = False) -> dict:
    """Best score, throughput, screening savings, stage times, proxy gaps and predictor quality.

    The best score is over every trial (copied presets included); the rest describes the arm's own trials.
    `presets_only`: the presets arm, whose best is over preset trials only (a preset whose conversion
    failed is replaced by a sampled trial to reach the count, which is no preset).
    """
    best = max((t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and counts_as_arm_trial(t)
                and (t.user_attrs.get("preset") or not presets_only)), key=lambda t: t.value, default=None)
    trials = own_trials(study)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    screened = [t for t in trials if t.user_attrs.get("pruned_before_training")]
    trained = [t for t in trials if "train" in t.user_attrs.get("stage_seconds", {})]
    timing_s = [t.user_attrs["stage_seconds"]["time_untrained"] for t in trials
                if "time_untrained" in t.user_attrs.get("stage_seconds", {})]
    untimed_kept = [t for t in trained if "latency_upper_ms" in t.user_attrs]  # auto: kept at the upper bound
    hours = elapsed_seconds(study) / 3600
    train_s = [t.user_attrs["stage_seconds"]["train"] for t in trained]
    gaps = [abs(t.user_attrs["train_val_si_rmse"] - t.user_attrs["si_rmse"]) for t in complete
            if "train_val_si_rmse" in t.user_attrs]
    last_vs_final = [abs(t.intermediate_values[max(t.intermediate_values)] - t.value) / t.value for t in complete
                     if t.intermediate_values and t.value]
    def prediction(t: optuna.trial.FrozenTrial) -> float | None:
        a = t.user_attrs  # latency_prediction_ms: kept when the graph was then timed untrained
        return a.get("latency_prediction_ms", a["latency_estimate_ms"] if a.get("latency_estimate_source") == "predicted"
                     else None)

    predicted = [t for t in complete if prediction(t) is not None]
    stages = {k: mean(t.user_attrs["stage_seconds"].get(k, 0.0) for t in complete)
              for k in ("time_untrained", "train", "export", "evaluate", "measure")} if complete else {}
    return {
        "best_score": best.value if best else None,
        "best_trial": None if best is None else {"number": best.number, "preset": best.user_attrs.get("preset"),
                                                 "arch": best.user_attrs["arch"], "si_rmse": best.user_attrs["si_rmse"],
                                                 "latency_ms": best.user_attrs["latency_ms"]},
        "trials": len(trials), "complete": len(complete), "screened_before_training": len(screened),
        "screened_by": {kind: sum(1 for t in screened if t.user_attrs.get("screened_by") == kind)
                        for kind in ("compute_cap", "latency_bound")},
        "pruned_while_training": sum(1 for t in trials if t.state == optuna.trial.TrialState.PRUNED) - len(screened),
        "failed": sum(1 for t in trials if t.state == optuna.trial.TrialState.FAIL),
        "wall_hours": hours, "trained_trials_per_hour": len(trained) / hours if hours else None,
        "share_screened": len(screened) / len(trials) if trials else 0.0,
        # Cap-screened draws would mostly never have been drawn by a sampler that knew the cap: count the
        # latency screen's savings only.
        "untrained_timings": len(timing_s), "untrained_timing_minutes": sum(timing_s) / 60,
        "trained_without_untrained_timing": len(untimed_kept),
        "trained_after_untrained_timing": sum(1 for t in trained if "time_untrained" in t.user_attrs["stage_seconds"]),
        "training_minutes_saved": (sum(1 for t in screened if t.user_attrs.get("screened_by") != "compute_cap")
                                   * (mean(train_s) if train_s else 0.0) / 60),
        "mean_stage_seconds": stages,
        "train_val_vs_tflite_si_rmse_gap": {"median": median(gaps), "max": max(gaps)} if gaps else None,
        "last_intermediate_vs_final_rel_gap": ({"median": median(last_vs_final), "max": max(last_vs_final)}
                                               if last_vs_final else None),
        "latency_prediction": None if len(predicted) < 3 else {
            "trials": len(predicted),
            "spearman": spearman([prediction(t) for t in predicted], [t.user_attrs["latency_ms"] for t in predicted]),
            "within_10pct": mean(abs(prediction(t) / t.user_attrs["latency_ms"] - 1) <= 0.1 for t in predicted)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="quick")
    parser.add_argument("--wall-minutes", type=float, default=60.0, help="wall time of each search arm")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--trials", type=int, default=20,
                        help="trained trials each search arm aims at (it stops at this or its wall time)")
    parser.add_argument("--arms", nargs="+", default=["presets", "tpe", "random", "tpe-presets"])
    parser.add_argument("--work", type=Path, default=Path("results/benchmarks/search_quality"))
    parser.add_argument("--out", type=Path, default=None,
                        help="result file (default: benchmarks/results/search_quality/<UTC date and time>.json)")
    parser.add_argument("--retime-top", type=int, default=3, help="re-time this many best trials of each arm")
    parser.add_argument("--retime-rounds", type=int, default=5)
    parser.add_argument("--tag", default="", help="suffix of the search arms' names (a second variant beside the "
                                                    "first in one --work folder)")
    parser.add_argument("--time-before-training", action=argparse.BooleanOptionalAction, default=False,
                        help="search arms time each new graph untrained before training it (config "
                             "time_before_training)")
    parser.add_argument("--max-si-rmse", type=float, default=None,
                        help="accuracy floor of the tpe-floor arm; every arm is judged against it too")
    parser.add_argument("--presets", nargs="+", default=None,
                        help="presets of the presets arm (each in every precision of the space); default: all")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    out = args.out or results_path(NAME)
    wall = args.wall_minutes * 60
    started = time.time()
    arms: dict[str, dict] = {}
    studies: dict[str, optuna.Study] = {}
    presets_study = None
    if "presets" in args.arms:
        points = preset_points(load_space(arm_config(args.work, "presets", 0, args.budget).space))
        names = [n for n in points if args.presets is None or n.removesuffix("-int8") in args.presets]
        study = run_arm(args, "presets", 0, None, baselines=names if args.presets else "all", pruner="none",
                        latency_screen=False, trials=len(names))
        presets_study = studies["presets"] = study
        arms["presets"] = summarize(study, presets_only=True)
        arms["presets"]["scores"] = {t.user_attrs.get("preset"): t.value for t in study.trials
                                     if t.state == optuna.trial.TrialState.COMPLETE}
    search = {"time_before_training": args.time_before_training}
    for seed in args.seeds:
        if "tpe" in args.arms:
            name = f"tpe-s{seed}{args.tag}"
            studies[name] = run_arm(args, name, seed, wall, **search)
            arms[name] = summarize(studies[name])
        if "tpe-timed" in args.arms:  # the same search, each new graph timed untrained before training
            name = f"tpe-timed-s{seed}{args.tag}"
            studies[name] = run_arm(args, name, seed, wall, time_before_training=True)
            arms[name] = summarize(studies[name])
        if "tpe-auto" in args.arms:  # timed untrained only where the prediction leaves the screen open
            name = f"tpe-auto-s{seed}{args.tag}"
            studies[name] = run_arm(args, name, seed, wall, time_before_training="auto")
            arms[name] = summarize(studies[name])
        if "tpe-floor" in args.arms:  # the same search with the accuracy floor
            name = f"tpe-floor-s{seed}{args.tag}"
            studies[name] = run_arm(args, name, seed, wall, max_si_rmse=args.max_si_rmse, **search)
            arms[name] = summarize(studies[name])
        if "random" in args.arms:
            name = f"random-s{seed}{args.tag}"
            studies[name] = run_arm(args, name, seed, wall, sampler="random", **search)
            arms[name] = summarize(studies[name])
    if "tpe-presets" in args.arms:
        name = f"tpe-presets{args.tag}"
        studies[name] = run_arm(args, name, args.seeds[0], wall, start_from=presets_study, **search)
        arms[name] = summarize(studies[name])

    if args.max_si_rmse is not None:
        for name, study in studies.items():
            arms[name]["floor"] = floor_figures(study, args.max_si_rmse)

    def best_of(prefix: str) -> float | None:
        scores = [a["best_score"] for k, a in arms.items() if k.startswith(prefix) and a["best_score"]]
        return max(scores) if scores else None

    preset_best = best_of("presets")
    ratios = {}
    if preset_best:
        for name, prefix in (("tpe", "tpe-s"), ("tpe-timed", "tpe-timed-s"), ("tpe-auto", "tpe-auto-s"),
                             ("random", "random-s"), ("tpe-presets", "tpe-presets")):
            if (b := best_of(prefix)) is not None:
                ratios[name] = b / preset_best
    quiet = retime(args.work, studies, args.retime_top, args.retime_rounds) if args.retime_top else {}

    def quiet_best(prefix: str) -> float | None:
        scores = [a["best_quiet_score"] for k, a in quiet.items() if k.startswith(prefix) and a["best_quiet_score"]]
        return max(scores) if scores else None

    quiet_preset = quiet_best("presets")
    # Random sampling against the TPE arm timed as it was: the timed TPE arm when random timed too.
    tpe_like_random = "tpe-timed-s" if args.time_before_training and "tpe-timed" in args.arms else "tpe-s"
    result = {
        "command_with_defaults": "python benchmarks/search_quality.py " + " ".join(
            [f"--budget {args.budget}", f"--wall-minutes {args.wall_minutes:g}", f"--trials {args.trials}", "--seeds",
             *map(str, args.seeds), "--arms", *args.arms, *(["--presets", *args.presets] if args.presets else []),
             *([f"--tag {args.tag}"] if args.tag else []),
             *([f"--max-si-rmse {args.max_si_rmse:g}"] if args.max_si_rmse is not None else []),
             "--time-before-training" if args.time_before_training else "--no-time-before-training"]),
        "hours": (time.time() - started) / 3600,
        "arms": arms, "best_preset_score": preset_best,
        "search_vs_best_preset": ratios.get("tpe"), "timed_search_vs_best_preset": ratios.get("tpe-timed"),
        "auto_timed_search_vs_best_preset": ratios.get("tpe-auto"),
        "random_vs_best_preset": ratios.get("random"),
        "search_from_presets_vs_best_preset": ratios.get("tpe-presets"),
        "tpe_vs_random": ((best_of(tpe_like_random) / best_of("random-s"))
                          if best_of(tpe_like_random) and best_of("random-s") else None),
        "tpe_vs_random_arms": [tpe_like_random, "random-s"],
        "quiet": quiet,
        "quiet_tpe_vs_random": ((quiet_best(tpe_like_random) / quiet_best("random-s"))
                                if quiet_best(tpe_like_random) and quiet_best("random-s") else None),
        "quiet_search_vs_best_preset": (quiet_best("tpe-s") / quiet_preset) if quiet_best("tpe-s") and quiet_preset else None,
        "quiet_timed_search_vs_best_preset": ((quiet_best("tpe-timed-s") / quiet_preset)
                                              if quiet_best("tpe-timed-s") and quiet_preset else None),
        "quiet_auto_timed_search_vs_best_preset": ((quiet_best("tpe-auto-s") / quiet_preset)
                                                   if quiet_best("tpe-auto-s") and quiet_preset else None),
        "quiet_random_vs_best_preset": ((quiet_best("random-s") / quiet_preset)
                                        if quiet_best("random-s") and quiet_preset else None),
        "quiet_search_from_presets_vs_best_preset": ((quiet_best("tpe-presets") / quiet_preset)
                                                     if quiet_best("tpe-presets") and quiet_preset else None),
    }
    write_result(NAME, result, path=out)
    print(json.dumps({k: v for k, v in result.items() if k not in ("arms", "quiet")}, indent=2))
    for name, arm in arms.items():
        print(f"{name}: best {arm['best_score']}, {arm['complete']} complete, {arm['screened_before_training']} "
              f"screened, {arm['trained_trials_per_hour']} trained trials/h")
        if "floor" in arm:
            f = arm["floor"]
            print(f"  si-RMSE ≤ {f['max_si_rmse']:g}: {f['meeting']} of {f['complete']} complete, best {f['best_score']}")



if __name__ == "__main__":
    main()
