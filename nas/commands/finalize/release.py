"""`nas finalize`: train the best (or a named) trial's architecture fully and ship its `.tflite`."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


import numpy as np
import optuna

from nas.arch import Arch
from nas.config import BUDGETS, Budget, RunConfig
from nas.infra.console import err as console
from nas.data.dataset import DepthSplit, load_split
from nas.errors import ConfigError
from nas.infra.files import atomic_write_text, staged_folder
from nas.export.tflite_convert import TFLiteModel
from nas.hardware import sustained as under_load
from nas.report.figures import sustained_figure
from nas.report.depth_previews import depth_previews
from nas.report.model_page import search_figures, write_model_page
from nas.trial.display import rounded
from nas.trial.pipeline import retrain, sustained_seconds, trial_weights_setting
from nas.trial.session import Session
from nas.trial.record import (arch_of, attrs, best_feasible, budget_of, encoder_weights_of, has_arch, latency_of,
                              most_accurate, ranked_trials, score_of, si_rmse_of, study_floor)
from nas.trial.study import load_study


def pick_trial(study: optuna.Study, number: int | None) -> optuna.trial.FrozenTrial:
    """The named trial, or the complete trial with the best Final Score (on the Pareto front, for a Pareto
    study: the front's trial with the best Final Score) among those that meet the study's accuracy floor."""
    if number is not None:
        for t in study.get_trials(deepcopy=False):
            if t.number == number:
                if not has_arch(t):
                    raise ConfigError(None, f"trial {number} has no architecture recorded")
                return t
        raise ConfigError(None, f"study {study.study_name!r} has no trial {number}")
    if not ranked_trials(study, feasible_only=False):
        raise ConfigError(None, f"study {study.study_name!r} has no complete trial to finalize")
    best = best_feasible(study)
    if best is None:
        closest = most_accurate(study)
        raise ConfigError(None, f"study {study.study_name!r}: no complete trial meets its max_si_rmse "
                                f"{study_floor(study)} (the most accurate, trial {closest.number}, has "
                                f"si-RMSE {si_rmse_of(closest):.4f}); run more trials or name one with --trial")
    return best


def write_model_report(out: Path, record: dict) -> Path:
    m = record["metrics"]
    lines = [
        f"# Final model: trial {record['trial']} of study {record['study']}",
        "",
        f"- Final Score: **{record['final_score']:.4f}** ({record['score_formula']})",
        f"- si-RMSE {m['si_rmse']:.4f}, RMSE {m['rmse']:.3f} m, log10 {m['log10']:.4f}, REL {m['rel']:.4f} "
        f"(TFLite model, {record['val_images']} validation images at {record['resolution']})",
        f"- Latency on {record['device']}: median {record['latency_ms']:.1f} ms, "
        f"p90 {record['latency_p90_ms']:.1f} ms ({record['threads']} thread{'s' if record['threads'] != 1 else ''})",
        f"- Parameters {record['params']:,}, MACs {record['macs'] / 1e6:,.0f} M, "
        f"`.tflite` {record['tflite_bytes'] / 1e6:.2f} MB",
        f"- Training: budget {record['budget']}, {record['train_steps']} steps in {record['train_seconds']:.0f} s",
        f"- Search trial's figures: score {rounded(record['search_score'])}, si-RMSE "
        f"{rounded(record['search_si_rmse'])}",
        *([f"- Under sustained load: {under_load.summary(record['sustained'])}"
           + (f" (**warning:** {caution})" if (caution := under_load.warning(record["sustained"])) else "")]
          if record.get("sustained") else []),
        *([f"- **Warning:** {record['worse_than_search']['line']}"] if record.get("worse_than_search") else []),
        *([f"- The study's accuracy floor, si-RMSE ≤ {record['max_si_rmse']:g}: "
           + ("met" if record["meets_max_si_rmse"] else "**not met** by the final model")]
          if "max_si_rmse" in record else []),
        "",
        "## Architecture",
        "",
        "```json",
        json.dumps(record["arch"], indent=2),
        "```",
        "",
        f"Files: `model.tflite` ({record['precision']}, float32 input and output: ship this), `model.onnx`, "
        "`model.pt` (PyTorch weights), `metrics.json`, `preview.png` (input | ground truth | prediction | error), "
        "`sustained.png` (latency and temperature under sustained load), "
        "`report.html` (this report as a page: search trial against final model, parity checks, and `previews.png`, "
        "input | ground truth | prediction | error on test images).",
    ]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


PREVIEW_IMAGES = 4


def preview_split(config: RunConfig) -> tuple[DepthSplit, str]:
    """A few test images at deployment resolution, or validation ones when the test split is empty
    (the split's name then says so)."""
    size = (config.deploy_width, config.deploy_height)
    try:
        return load_split(config.data_root, "test", size, PREVIEW_IMAGES), "test"
    except FileNotFoundError:
        return (load_split(config.data_root, "validation", size, PREVIEW_IMAGES),
                "validation (the test split is empty)")


def write_model_previews(out: Path, config: RunConfig, tflite_path: Path) -> tuple[str, str]:
    """previews.png of the shipped `.tflite` on test images; returns its file name and the page's caption."""
    split, split_name = preview_split(config)
    model = TFLiteModel(tflite_path)
    depth_previews(out / "previews.png", split.rgb, split.depth_mm, model.predict, names=split.stems)
    caption = (f"The shipped model.tflite on {len(split)} {split_name} image(s) at "
               f"{config.deploy_width}×{config.deploy_height}: input | ground truth | prediction | error "
               "(prediction − ground truth). Ground truth and prediction share one colour bar in metres; "
               "grey pixels have no ground truth.")
    return "previews.png", caption


def finalize(config: RunConfig, trial_number: int | None, out: Path | None) -> Path:
    """Retrain the chosen arch with `config.budget`, export, score, time; write the release folder."""
    study = load_study(config.storage_url, config.study)
    trial = pick_trial(study, trial_number)
    arch = Arch.from_dict(arch_of(trial))
    config = config.model_copy(update={"pretrained": trial_weights_setting(config, trial)})
    budget = BUDGETS[config.budget]
    # The shipped file is timed anew, not served its graph's figure from the search: one timing during a
    # search can stray (benchmarks/latency_repeatability.md), and this is the figure users quote.
    with Session(config, backbones=[arch.backbone], budget=budget, fresh_latency=True,
                 busy_wait_s=BUSY_WAIT_S) as session:
        weights = session.weights
        if (recorded := encoder_weights_of(trial).get("sha256")) and \
                weights[arch.backbone].sha256 != recorded:
            console.print(f"note: trial {trial.number} started from encoder weights {recorded[:12]}…, the final "
                          f"model from {weights[arch.backbone].sha256 or 'random weights'}", markup=False)
        ctx = session.context
        final = out or config.results / "final" / f"{config.study}-trial{trial.number}"
        check_release_folder(final)
        console.print(f"finalizing trial {trial.number} ({arch.arch_id}, {arch.precision}) with budget "
                      f"{config.budget}")
        # Built in a hidden sibling and swapped in at the end: --out holds the previous release or the whole
        # new one, never a half (a full disk, a crash, Ctrl-C).
        seed = config.seed + trial.number  # the search trained trial N with seed + N: the same start
        keep = trained_folder(config, trial, seed)
        try:
            with staged_folder(final) as out:
                # Timed under sustained load too: the burst figure is the Final Score's, the curve shows what
                # the device does after a while of work (`sustained` in metrics.json, sustained.png).
                retrained = retrain(ctx, trial, budget, out, "final model", seed, keep=keep,
                                    sustained_s=sustained_seconds(ctx))
                release_files(out, config, study, trial, retrained, ctx, seed)
        except BaseException:
            if (keep / "model.pt").is_file():
                console.print(f"the trained network is kept in {keep}: a rerun of this command reuses it",
                              markup=False, soft_wrap=True)
            raise
    deployed = retrained.deployed
    console.print(f"final model: score {deployed.score:.4f}, si-RMSE {deployed.metrics['si_rmse']:.4f}, "
                  f"{deployed.latency.median_ms:.1f} ms -> {final}", markup=False)
    if run := deployed.latency.sustained:
        console.print(f"final model under load: {under_load.summary(run)}", markup=False, soft_wrap=True)
        if caution := under_load.warning(run):
            console.print(f"warning: {caution}", style="bold red", markup=False, soft_wrap=True)
    if worse := worse_than_search(deployed.score, deployed.metrics["si_rmse"], deployed.latency.median_ms, trial,
                                  budget):
        console.print(f"warning: {worse_line(worse, trial.number)}", style="bold red", markup=False, soft_wrap=True)
    if (floor := study_floor(study)) is not None and deployed.metrics["si_rmse"] > floor:
        console.print(f"warning: the final model's si-RMSE {deployed.metrics['si_rmse']:.4f} is above the study's "
                      f"max_si_rmse {floor:g}", markup=False)
    return final


# How long `nas finalize` waits for a device another runner is timing on (another study's worker, a finalize
# beside it): a timed run lasts minutes at most (measure_timeout_s), and what waits is minutes of training.
BUSY_WAIT_S = 1800.0
# A final model whose Final Score is below this share of its search trial's is called out (`worse_than_search`).
WORSE_THAN_SEARCH = 0.9


def trained_folder(config: RunConfig, trial: optuna.trial.FrozenTrial, seed: int) -> Path:
    """Where the final training of `trial` is kept for a rerun: by study, trial, budget and seed."""
    return config.results / "cache" / "final" / f"{config.study}-trial{trial.number}-{config.budget}-seed{seed}"


def smaller_budget(final: Budget, search: dict | None) -> list[str]:
    """How `final` trains less than the search's budget did (steps, batch, resolution, training images)."""
    if not search:
        return []
    less = []
    if final.steps < search.get("steps", 0):
        less.append(f"{final.steps} steps against {search['steps']}")
    if final.batch_size < search.get("batch_size", 0):
        less.append(f"batch {final.batch_size} against {search['batch_size']}")
    if final.train_width * final.train_height < search.get("train_width", 0) * search.get("train_height", 0):
        less.append(f"{final.train_width}×{final.train_height} against {search['train_width']}×"
                    f"{search['train_height']}")
    if final.train_limit and (not search.get("train_limit") or final.train_limit < search["train_limit"]):
        less.append(f"{final.train_limit} training images against {search.get('train_limit') or 'all'}")
    return less


def worse_than_search(score: float, si_rmse: float, latency_ms: float, trial: optuna.trial.FrozenTrial,
                      budget: Budget) -> dict | None:
    """When the final model's Final Score is below `WORSE_THAN_SEARCH` of its search trial's: the ratio, both
    figures and the likely reason (a smaller budget than the search's, a less accurate run, a slower timing);
    None otherwise."""
    search = score_of(trial)
    if search is None or search <= 0 or score >= WORSE_THAN_SEARCH * search:
        return None
    recorded = budget_of(trial)
    less = smaller_budget(budget, recorded)
    search_si, search_ms = si_rmse_of(trial), latency_of(trial)
    causes = []
    if search_si is not None and si_rmse > search_si:
        causes.append(f"si-RMSE {si_rmse:.4f} against {search_si:.4f}")
    if search_ms is not None and latency_ms > search_ms:
        causes.append(f"latency {latency_ms:.1f} ms against {search_ms:.1f} ms")
    figures = f" ({', '.join(causes)})" if causes else ""
    searched = recorded.get("name", "?") if recorded else None
    if less:
        reason = (f"a smaller budget than the search's: {budget.name} against {searched} ({', '.join(less)}); "
                  f"finalize with --budget {searched} or larger")
    elif recorded is None:
        reason = ("a worse training run, or a smaller budget than the search's (the trial's budget was not "
                  "recorded; this study predates it)")
    elif causes and all(c.startswith("latency") for c in causes):
        reason = "a slower timing on the device (another load on it, or another device than the search's)"
    else:
        reason = (f"a worse training run: budget {budget.name} is no smaller than the search's ({searched}), so the "
                  "training itself went worse; finalize again with a larger budget")
    return {"ratio": round(score / search, 4), "final_score": score, "search_score": search,
            "budget": budget.name, "search_budget": searched, "smaller_budget": bool(less),
            "figures": figures.strip(" ()"), "reason": reason}


def worse_line(worse: dict, trial: int) -> str:
    """The warning's words: how much worse, in which figures, and the likely reason."""
    figures = f" ({worse['figures']})" if worse["figures"] else ""
    return (f"the final model's Final Score {worse['final_score']:.4f} is {worse['ratio']:.0%} of its search "
            f"trial {trial}'s {worse['search_score']:.4f}{figures}; likely reason: {worse['reason']}")


RELEASE_MARKS = ("metrics.json", "model.tflite", "model.pt")


def check_release_folder(folder: Path) -> None:
    """ConfigError unless `folder` is new, empty or a release: a release is replaced as a whole."""
    if folder.exists() and (not folder.is_dir() or (any(folder.iterdir())
                                                    and not any((folder / m).exists() for m in RELEASE_MARKS))):
        raise ConfigError(folder, "exists and is not a release folder (no metrics.json or model.tflite); the new "
                                  "release replaces --out as a whole, so pass a new or empty folder")


def int8_drift(deployed, ctx) -> dict[str, Any] | None:
    """Where an int8 model's accuracy went, when it lost more than the margin against its float32 twin on the
    validation frames (`nas.export.int8_drift`): the layers where the error grows most and the si-RMSE at
    three calibration-set sizes; printed, and kept in metrics.json and on the page."""
    if deployed.fp32_metrics is None or deployed.fp32_path is None:
        return None
    from nas.export.int8_drift import PROBE_IMAGES, format_drift, locate_int8_drift

    with console.status("locating the int8 model's accuracy loss"):
        report = locate_int8_drift(deployed.tflite_path, deployed.fp32_path,
                                   np.asarray(ctx.val_frames.rgb[:PROBE_IMAGES]),
                                   si_rmse_int8=deployed.metrics["si_rmse"],
                                   si_rmse_fp32=deployed.fp32_metrics["si_rmse"], onnx_path=deployed.onnx_path,
                                   calibration=ctx.calibration_images, margin=ctx.config.int8_drift_margin)
    if report is not None:
        console.print(format_drift(report), markup=False, highlight=False)
    return report


def device_record(latency, ctx) -> dict[str, Any]:
    """What metrics.json keeps of the device beyond the latency record: the profile's `threads_fixed` (None: the
    fastest count was shipped) and the sustained-load run with the facts of the device it ran on."""
    profile = next((d for d in ctx.meter.devices if d.name == latency.device), None)
    found: dict[str, Any] = {"threads_fixed": profile.threads_fixed if profile is not None else None}
    if latency.sustained:
        found["sustained"] = {**latency.sustained, "device": latency.device,
                              "kind": profile.kind if profile is not None else None, "cpu": latency.cpu,
                              "threads": latency.threads, "cpu_governor": latency.cpu_governor,
                              "cpu_max_freq_khz": latency.cpu_max_freq_khz}
    return found


def release_files(out: Path, config: RunConfig, study: optuna.Study, trial: optuna.trial.FrozenTrial, retrained,
                  ctx, seed: int) -> None:
    """metrics.json, report.md, report.html and previews.png of the retrained model, into `out`."""
    result, deployed, trial_record = retrained.train, retrained.deployed, retrained.record
    distill_lambda = retrained.distill_lambda
    record = {
        "study": config.study, "trial": trial.number, **trial_record.as_attrs(), "metrics": deployed.metrics,
        "score_c": config.score_c, "score_alpha": config.score_alpha, "score_formula": config.score_rule.formula, "budget": config.budget, "train_steps": result.steps,
        "train_seconds": result.seconds, "val_images": len(ctx.val_frames),
        "resolution": f"{config.deploy_width}×{config.deploy_height}",
        "search_score": score_of(trial), "search_si_rmse": si_rmse_of(trial),
        "search_trial": search_figures(attrs(trial)),
        "search_budget": budget_of(trial), "seed": seed,
        "distill_lambda": distill_lambda, "created": datetime.now(timezone.utc).isoformat(),
    }
    if worse := worse_than_search(deployed.score, deployed.metrics["si_rmse"], deployed.latency.median_ms, trial,
                                  BUDGETS[config.budget]):
        record["worse_than_search"] = {**worse, "line": worse_line(worse, trial.number)}
    if (floor := study_floor(study)) is not None:  # the study's accuracy floor, judged again
        record.update(max_si_rmse=floor, meets_max_si_rmse=deployed.metrics["si_rmse"] <= floor)
    if drift := int8_drift(deployed, ctx):
        record["int8_drift"] = drift
    record.update(device_record(deployed.latency, ctx))
    if record.get("sustained"):
        sustained_figure(record["sustained"], out / "sustained.png")
    atomic_write_text(out / "metrics.json", json.dumps(record, indent=2))
    write_model_report(out, record)
    with console.status("drawing previews on test images"):
        write_model_page(out, record, *write_model_previews(out, config, deployed.tflite_path))
    (out / "onnx2tf.log").unlink(missing_ok=True)
