"""Latency before training: the graph's cost figures, a predictor fitted on the study's own measurements,
and the bound that screens out candidates which cannot win.

Latency depends on the graph, precision, device, threads and runtime, not on the weights
(`benchmarks/latency_weights.py` measures this), so it can be known before a candidate is trained:
exactly when the same graph was timed before (the latency cache is keyed by graph), otherwise
predicted. The predictor is deliberately small, in the spirit of nn-Meter and HELP but fitted only on
this study's device: log(latency) is linear in log(MACs), log(activation elements) and an int8 flag,
fitted by least squares on the complete trials. Its leave-one-out errors set how far below a
prediction the true latency may plausibly lie, and that lower bound, not the prediction, is what the
screen uses, so a good candidate is not discarded because the predictor guessed high.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

MIN_POINTS = 4  # fewer measured trials than this: no prediction, the candidate is simply trained
FULL_MODEL_POINTS = 7  # from this many points on, activation memory enters the model too
MIN_LOG_MARGIN = math.log(1 / 0.8)  # the lower bound is at least 20 % below the prediction
INT8_PRIOR = 0.5  # int8/fp32 latency ratio assumed (optimistically) before any int8 model was timed


@torch.no_grad()
def graph_figures(model: torch.nn.Module, height: int, width: int) -> dict[str, int]:
    """MACs (torch's FLOP counter / 2) and activation elements (outputs of every leaf module) of one frame."""
    model = model.eval()
    device = next(model.parameters()).device
    activations = 0

    def count(_module, _inputs, output) -> None:
        nonlocal activations
        if isinstance(output, torch.Tensor):
            activations += output.numel()

    hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            model(torch.zeros(1, 3, height, width, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    return {"macs": int(counter.get_total_flops() // 2), "activations": int(activations)}


@dataclass(frozen=True)
class LatencyPoint:
    macs: int
    activations: int
    int8: bool
    latency_ms: float


def _design(points: Sequence[LatencyPoint], full: bool, with_int8: bool) -> np.ndarray:
    columns = [np.ones(len(points)), np.log([max(p.macs, 1) for p in points])]
    if full:
        columns.append(np.log([max(p.activations, 1) for p in points]))
    if with_int8:
        columns.append(np.array([float(p.int8) for p in points]))
    return np.stack(columns, axis=1)


def _solve(x: np.ndarray, y: np.ndarray, ridge: float = 1e-3) -> np.ndarray:
    """Least squares with a whisper of ridge (not on the intercept), stable on a handful of points."""
    penalty = ridge * np.eye(x.shape[1])
    penalty[0, 0] = 0.0
    return np.linalg.solve(x.T @ x + penalty, x.T @ y)


@dataclass
class LatencyPredictor:
    """log-linear latency model; `lower_bound` is the prediction less the worst leave-one-out error."""

    coef: np.ndarray
    full: bool
    with_int8: bool
    log_margin: float
    points: int
    loo_log_errors: np.ndarray  # prediction minus truth, in log space, one per point

    @classmethod
    def fit(cls, points: Sequence[LatencyPoint]) -> LatencyPredictor | None:
        """None below MIN_POINTS measurements."""
        points = [p for p in points if p.latency_ms > 0]
        if len(points) < MIN_POINTS:
            return None
        full = len(points) >= FULL_MODEL_POINTS
        with_int8 = len({p.int8 for p in points}) == 2 and len(points) >= MIN_POINTS + 1
        x = _design(points, full, with_int8)
        y = np.log([p.latency_ms for p in points])
        coef = _solve(x, y)
        errors = []
        for i in range(len(points)):
            keep = np.arange(len(points)) != i
            errors.append(float(x[i] @ _solve(x[keep], y[keep]) - y[i]))
        loo = np.array(errors)
        margin = max(MIN_LOG_MARGIN, float(np.max(loo)) if len(loo) else MIN_LOG_MARGIN)
        return cls(coef, full, with_int8, margin, len(points), loo)

    def predict_ms(self, macs: int, activations: int, int8: bool) -> float:
        point = LatencyPoint(macs, activations, int8, 1.0)
        value = float(_design([point], self.full, self.with_int8)[0] @ self.coef)
        if int8 and not self.with_int8:
            value += math.log(INT8_PRIOR)
        return math.exp(value)

    def lower_bound_ms(self, macs: int, activations: int, int8: bool) -> float:
        """A latency the candidate is unlikely to beat: the prediction over exp(worst over-prediction seen)."""
        return self.predict_ms(macs, activations, int8) * math.exp(-self.log_margin)

    def quality(self) -> dict[str, float]:
        """Leave-one-out figures: share of predictions within ±10 % and the largest error."""
        ratio = np.exp(self.loo_log_errors)
        return {"points": self.points, "within_10pct": float(np.mean(np.abs(ratio - 1) <= 0.10)),
                "max_abs_log_error": float(np.max(np.abs(self.loo_log_errors))), "log_margin": self.log_margin}


def best_possible_score(si_rmse_floor: float, latency_lower_ms: float, alpha: float, c: float) -> float:
    """The Final Score a candidate would get at the optimistic si-RMSE and its latency lower bound."""
    return 2.0 ** (-alpha * si_rmse_floor) / (c * latency_lower_ms / 1000.0)


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    def ranks(v: Sequence[float]) -> np.ndarray:
        v = np.asarray(v, dtype=float)
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=float)
        for value in np.unique(v):
            tied = v == value
            r[tied] = r[tied].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])
