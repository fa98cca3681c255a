"""The screen before training: a candidate's latency known or predicted, and whether it can still win.

A candidate's latency is known (the same graph was timed before) or predicted from the study's own
measurements (`latency_points`) before it is trained. If even an optimistic si-RMSE at a latency below the
prediction cannot beat the study's best Final Score, the candidate is pruned before any training
(`screen_reason`); where the prediction leaves that open, the untrained graph may be timed first
(`timing_can_decide`). The space's compute cap (`compute_cap_reason`) is judged on the candidate's size alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna

from nas.arch import Arch
from nas.trial.latency_model import LatencyPoint, LatencyPredictor
from nas.trial.pipeline import graph_key
from nas.trial.record import attrs, measured_latency_ms, si_rmse_of
from nas.trial.session import TrialContext


@dataclass(frozen=True)
class LatencyEstimate:
    """Latency known before training: measured for this graph already, or predicted with bounds."""

    ms: float
    lower_ms: float
    source: str  # "measured" | "predicted"
    upper_ms: float | None = None  # a prediction's upper bound (a measurement needs none)


def latency_points(study: optuna.Study) -> list[LatencyPoint]:
    """The study's measured (graph figures, latency) pairs, one per graph: the predictor's training data.

    Complete trials give their deployed latency; candidates timed untrained and then screened or pruned
    give that measurement (a predicted figure is never fitted on).
    """
    points: dict[str, LatencyPoint] = {}
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    for t in study.get_trials(deepcopy=False, states=states):
        a = attrs(t)
        ms = measured_latency_ms(a)
        if ms is None or not {"macs", "activations"} <= set(a):
            continue
        points[a.get("arch_id", f"trial {t.number}")] = LatencyPoint(a["macs"], a["activations"], a.get("precision") == "int8", ms)
    return list(points.values())


def estimate_latency(ctx: TrialContext, study: optuna.Study, arch: Arch, figures: dict[str, int]
                     ) -> LatencyEstimate | None:
    if ctx.config.latency_key == "graph":
        known = ctx.meter.cached(graph_key(arch, ctx.config))
        if known is not None:
            return LatencyEstimate(known.median_ms, known.median_ms, "measured")
    predictor = LatencyPredictor.fit(latency_points(study))
    if predictor is None:
        return None
    macs, activations, int8 = figures["macs"], figures["activations"], arch.precision == "int8"
    return LatencyEstimate(predictor.predict_ms(macs, activations, int8),
                           predictor.lower_bound_ms(macs, activations, int8), "predicted",
                           predictor.upper_bound_ms(macs, activations, int8))


def optimistic_si_rmse(ctx: TrialContext, study: optuna.Study) -> float | None:
    """The si-RMSE the screen assumes a candidate could reach (configured, or derived from the study)."""
    cfg = ctx.config
    if cfg.bound_si_rmse is not None:
        return cfg.bound_si_rmse
    seen = [si for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if (si := si_rmse_of(t)) is not None]
    if ctx.distillation is not None and ctx.distillation.record.get("teacher_val_si_rmse") is not None:
        seen.append(ctx.distillation.record["teacher_val_si_rmse"])
    return max(min(seen) - cfg.bound_margin, 0.0) if seen else None


def compute_cap_reason(space, figures: dict[str, int], preset: str | None) -> str | None:
    """Why a candidate is above the space's compute cap (`max_mmacs`), or None. Presets are never capped:
    a user who enqueues one by name wants its figures."""
    if space.max_mmacs is None or preset is not None or figures["macs"] <= space.max_mmacs * 1e6:
        return None
    where = f" ({space.path})" if space.path is not None else ""
    return (f"compute cap: {figures['macs'] / 1e6:.0f} MMACs per frame > the space's max_mmacs "
            f"{space.max_mmacs:g}{where}")


def screen_reason(ctx: TrialContext, study: optuna.Study, estimate: LatencyEstimate | None) -> str | None:
    """Why this candidate cannot beat the incumbent, or None when it might."""
    cfg = ctx.config
    if estimate is None or not cfg.latency_screen or cfg.objective != "score":
        return None
    try:
        best = study.best_trial
    except ValueError:  # no complete trial yet
        return None
    floor = optimistic_si_rmse(ctx, study)
    if floor is None:
        return None
    bound = cfg.score_rule.upper_bound(floor, estimate.lower_ms)
    if bound >= best.value:
        return None
    return (f"latency bound: {estimate.source} latency {estimate.ms:.1f} ms (lower bound {estimate.lower_ms:.1f} ms); "
            f"even at si-RMSE {floor:.3f} the score cannot exceed {bound:.3f} < best {best.value:.3f} "
            f"(trial {best.number})")


def timing_can_decide(ctx: TrialContext, study: optuna.Study, estimate: LatencyEstimate | None) -> bool:
    """Whether timing the untrained graph could change what happens to the candidate before training.

    `time_before_training: true` times every new graph. Otherwise (`auto`) a prediction that passes the
    screen even at its upper bound keeps the candidate whatever the device says, so that conversion would
    only delay training: the trained model is timed once, as an untimed search would. Without a prediction
    (fewer than 4 measured graphs) the graph is timed: the pruner has no other figure and the predictor
    learns from it.
    """
    if estimate is None:
        return True
    if estimate.source == "measured":
        return False
    if ctx.config.time_before_training is True:
        return True
    upper = LatencyEstimate(estimate.upper_ms, estimate.upper_ms, estimate.source)
    return screen_reason(ctx, study, upper) is not None
