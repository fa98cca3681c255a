"""`nas finalize`: train the best (or a named) trial's architecture fully and ship its `.tflite`."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import optuna
import torch

from .arch import Arch
from .config import BUDGETS, RunConfig
from .console import err as console
from .errors import ConfigError
from .latency_model import graph_figures
from .models import DepthNet, count_params
from .pipeline import TrialRecord, deploy, prepare_context, train_candidate
from .search import check_inputs, ensure_synthetic_data
from .study import load_study


def pick_trial(study: optuna.Study, number: int | None) -> optuna.trial.FrozenTrial:
    """The named trial, or the complete trial with the best Final Score (on the Pareto front, for a
    Pareto study: the front's trial with the best Final Score)."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if "arch" in t.user_attrs]
    if len(study.directions) > 1 and complete:
        front = {t.number for t in study.best_trials}
        complete = [t for t in complete if t.number in front]
    if number is not None:
        for t in study.get_trials(deepcopy=False):
            if t.number == number:
                if "arch" not in t.user_attrs:
                    raise ConfigError(None, f"trial {number} has no architecture recorded")
                return t
        raise ConfigError(None, f"study {study.study_name!r} has no trial {number}")
    if not complete:
        raise ConfigError(None, f"study {study.study_name!r} has no complete trial to finalize")
    return max(complete, key=lambda t: t.user_attrs.get("final_score", float("-inf")))


def write_model_report(out: Path, record: dict) -> Path:
    m = record["metrics"]
    lines = [
        f"# Final model: trial {record['trial']} of study {record['study']}",
        "",
        f"- Final Score: **{record['final_score']:.4f}** (2^(-10·si-RMSE) / (C·runtime s), C = {record['score_c']})",
        f"- si-RMSE {m['si_rmse']:.4f}, RMSE {m['rmse']:.3f} m, log10 {m['log10']:.4f}, REL {m['rel']:.4f} "
        f"(TFLite model, {record['val_images']} validation images at {record['resolution']})",
        f"- Latency on {record['device']}: median {record['latency_ms']:.1f} ms, "
        f"p90 {record['latency_p90_ms']:.1f} ms ({record['threads']} threads)",
        f"- Parameters {record['params']:,}, MACs {record['macs'] / 1e6:,.0f} M, "
        f"`.tflite` {record['tflite_bytes'] / 1e6:.2f} MB",
        f"- Training: budget {record['budget']}, {record['train_steps']} steps in {record['train_seconds']:.0f} s",
        f"- Search trial's figures: score {record['search_score']}, si-RMSE {record['search_si_rmse']}",
        "",
        "## Architecture",
        "",
        "```json",
        json.dumps(record["arch"], indent=2),
        "```",
        "",
        f"Files: `model.tflite` ({record['precision']}, float32 input and output: ship this), `model.onnx`, "
        "`model.pt` (PyTorch weights), `metrics.json`, `preview.png` (input | ground truth | prediction).",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def finalize(config: RunConfig, trial_number: int | None, out: Path | None) -> Path:
    """Retrain the chosen arch with `config.budget`, export, score, time; write the release folder."""
    study = load_study(config.storage_url, config.study)
    trial = pick_trial(study, trial_number)
    arch = Arch.from_dict(trial.user_attrs["arch"])
    space, devices = check_inputs(config)
    if config.data is None:
        ensure_synthetic_data(config)
    budget = BUDGETS[config.budget]
    ctx = prepare_context(config, space, devices, budget)
    out = out or config.results / "final" / f"{config.study}-trial{trial.number}"
    out.mkdir(parents=True, exist_ok=True)
    console.print(f"finalizing trial {trial.number} ({arch.arch_id}, {arch.precision}) with budget {config.budget}")
    model = DepthNet(arch)
    figures = {"params": count_params(model), **graph_figures(model, config.deploy_height, config.deploy_width)}
    distill_lambda = float(trial.params.get("distill_lambda", config.distill_lambda)) if config.distill else 0.0
    result = train_candidate(ctx, model, arch, budget, "final training", config.seed, distill_lambda)
    torch.save(model.state_dict(), out / "model.pt")  # the expensive part is kept even if export fails
    try:
        deployed = deploy(ctx, model, arch, out, "final model")
    finally:
        ctx.meter.close()
    lat = deployed.latency
    trial_record = TrialRecord.build(arch, figures, deployed, {"train": result.seconds, **deployed.stage_seconds})
    record = {
        "study": config.study, "trial": trial.number, **trial_record.as_attrs(), "metrics": deployed.metrics,
        "score_c": config.score_c, "budget": config.budget, "train_steps": result.steps,
        "train_seconds": result.seconds, "val_images": len(ctx.val_frames),
        "resolution": f"{config.deploy_width}×{config.deploy_height}",
        "search_score": trial.user_attrs.get("final_score"), "search_si_rmse": trial.user_attrs.get("si_rmse"),
        "distill_lambda": distill_lambda, "created": datetime.now(timezone.utc).isoformat(),
    }
    (out / "metrics.json").write_text(json.dumps(record, indent=2))
    write_model_report(out, record)
    (out / "onnx2tf.log").unlink(missing_ok=True)
    console.print(f"final model: score {deployed.score:.4f}, si-RMSE {deployed.metrics['si_rmse']:.4f}, "
                  f"{lat.median_ms:.1f} ms -> {out}", markup=False)
    return out
