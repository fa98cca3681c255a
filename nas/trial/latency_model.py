"""Latency before training: the graph's cost figures, a predictor fitted on the study's own measurements,
and the bound that screens out candidates which cannot win.

Latency depends on the graph, precision, device, threads and runtime, not on the weights
(`benchmarks/latency_weights.py` measures this), so it can be known before a candidate is trained:
exactly when the same graph was timed before (the latency cache is keyed by graph), otherwise
predicted. The predictor is deliberately small, in the spirit of nn-Meter and HELP but fitted only on
this study's device: latency is a fixed cost plus a cost per MAC and per activation element, per
precision, fitted with non-negative coefficients on the complete trials. Its leave-one-out errors set
how far below a prediction the true latency may plausibly lie, and that lower bound, not the
prediction, is what the screen uses, so a good candidate is not discarded because the predictor
guessed high.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import nnls
from scipy.stats import spearmanr

from nas.arch import Arch
from nas.models import DepthNet, count_params
from nas.models.complexity import graph_figures

MIN_POINTS = 4  # fewer measured trials than this: no prediction, the candidate is simply trained
MIN_MARGIN = 0.8  # the lower bound is at least 20 % below the prediction
INT8_PRIOR = 0.5  # int8/fp32 ratio of the compute terms assumed (optimistically) before any int8 model was timed

def arch_figures(arch: Arch, height: int, width: int) -> dict[str, int]:
    """Parameters, MACs and activation elements of `arch` at deployment resolution, weights never allocated.

    Built on PyTorch's meta device (shapes only), so sizing a candidate takes a fraction of a second
    whatever its size: the compute cap and the latency screen run before anything real is built.
    """
    with torch.device("meta"):
        model = DepthNet(arch)
    return {"params": count_params(model), **graph_figures(model, height, width)}


@dataclass(frozen=True)
class LatencyPoint:
    macs: int
    activations: int
    int8: bool
    latency_ms: float


def _design(points: Sequence[LatencyPoint]) -> np.ndarray:
    """Columns: fixed cost, then MACs and activations (in millions) of fp32 models, then of int8 models."""
    rows = []
    for p in points:
        work = [p.macs / 1e6, p.activations / 1e6]
        rows.append([1.0, *([0.0, 0.0] if p.int8 else work), *(work if p.int8 else [0.0, 0.0])])
    return np.array(rows)


def fit_latency_model(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative coefficients minimising the *relative* error (each row scaled by 1/latency)."""
    coef, _ = nnls(x / y[:, None], np.ones(len(y)))
    return coef


@dataclass
class LatencyPredictor:
    """latency ≈ fixed + a·MACs + b·activations, per precision, fitted with non-negative coefficients.

    A device spends time on arithmetic and on moving activations; both terms only add, hence the
    non-negative fit. `lower_bound_ms` divides the prediction by the worst leave-one-out
    over-prediction seen (at least `1 / MIN_MARGIN`), `upper_bound_ms` by the worst under-prediction
    (at least by `MIN_MARGIN`).
    """

    coef: np.ndarray
    margin: float  # lower bound = prediction * margin
    upper_margin: float  # upper bound = prediction * upper_margin
    points: int
    loo_ratios: np.ndarray  # leave-one-out prediction / truth, one per point
    int8_seen: bool
    fp32_seen: bool

    @classmethod
    def fit(cls, points: Sequence[LatencyPoint]) -> LatencyPredictor | None:
        """None below MIN_POINTS measurements."""
        points = [p for p in points if p.latency_ms > 0]
        if len(points) < MIN_POINTS:
            return None
        x, y = _design(points), np.array([p.latency_ms for p in points])
        ratios = []
        for i in range(len(points)):
            keep = np.arange(len(points)) != i
            ratios.append(float(x[i] @ fit_latency_model(x[keep], y[keep]) / y[i]))
        loo = np.array(ratios)
        margin = min(MIN_MARGIN, 1.0 / max(float(loo.max()), 1e-6))
        upper_margin = max(1.0 / MIN_MARGIN, 1.0 / max(float(loo.min()), 1e-6))
        return cls(fit_latency_model(x, y), margin, upper_margin, len(points), loo, any(p.int8 for p in points),
                   any(not p.int8 for p in points))

    def predict_ms(self, macs: int, activations: int, int8: bool) -> float:
        coef = self.coef.copy()
        if int8 and not self.int8_seen:
            coef[3:5] = coef[1:3] * INT8_PRIOR
        elif not int8 and not self.fp32_seen:
            coef[1:3] = coef[3:5]  # int8 figures are optimistic for fp32: a sound lower bound
        return float(_design([LatencyPoint(macs, activations, int8, 1.0)])[0] @ coef)

    def lower_bound_ms(self, macs: int, activations: int, int8: bool) -> float:
        """A latency the candidate is unlikely to beat."""
        return self.predict_ms(macs, activations, int8) * self.margin

    def upper_bound_ms(self, macs: int, activations: int, int8: bool) -> float:
        """A latency the candidate is unlikely to exceed; infinite for a precision never measured (its
        prediction borrows the other precision's terms, which bounds it from below only)."""
        if not (self.int8_seen if int8 else self.fp32_seen):
            return float("inf")
        return self.predict_ms(macs, activations, int8) * self.upper_margin

    def quality(self) -> dict[str, float]:
        """Leave-one-out figures: share of predictions within ±10 % and the largest error."""
        return {"points": self.points, "within_10pct": float(np.mean(np.abs(self.loo_ratios - 1) <= 0.10)),
                "max_ratio": float(self.loo_ratios.max()), "min_ratio": float(self.loo_ratios.min()),
                "margin": self.margin, "upper_margin": self.upper_margin}


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either side is constant."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:  # scipy would warn and return NaN
        return float("nan")
    return float(spearmanr(a, b).statistic)
