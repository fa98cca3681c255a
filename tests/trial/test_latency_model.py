"""The latency predictor, its lower bound, and the score bound the latency screen uses."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nas.metrics import ScoreRule, final_score

from nas.arch import Arch
from nas.models import DepthNet
from nas.trial.latency_model import (
    MIN_POINTS,
    LatencyPoint,
    LatencyPredictor,
    graph_figures,
    spearman,
)


def _law(macs: int, acts: int, int8: bool) -> float:
    """A device whose latency follows compute and memory, with int8 1.4× faster."""
    return 2.0 + macs / 5e7 + acts / 4e6 / (1.4 if int8 else 1.0)


def _points(n: int, seed: int = 0, noise: float = 0.03) -> list[LatencyPoint]:
    rng = np.random.default_rng(seed)
    points = []
    for _ in range(n):
        macs, acts, int8 = int(rng.uniform(5e7, 3e9)), int(rng.uniform(2e6, 6e7)), bool(rng.integers(2))
        points.append(LatencyPoint(macs, acts, int8, _law(macs, acts, int8) * math.exp(rng.normal(0, noise))))
    return points


def test_no_prediction_from_too_few_measurements():
    assert LatencyPredictor.fit(_points(MIN_POINTS - 1)) is None


def test_predictor_ranks_unseen_graphs_and_its_lower_bound_stays_below_the_truth():
    predictor = LatencyPredictor.fit(_points(12))
    unseen = _points(40, seed=1, noise=0.0)
    predicted = [predictor.predict_ms(p.macs, p.activations, p.int8) for p in unseen]
    truth = [p.latency_ms for p in unseen]
    assert spearman(predicted, truth) > 0.9
    below = [predictor.lower_bound_ms(p.macs, p.activations, p.int8) <= p.latency_ms for p in unseen]
    assert np.mean(below) >= 0.95  # the screen's latency is a lower bound, not a guess
    above = [predictor.upper_bound_ms(p.macs, p.activations, p.int8) >= p.latency_ms for p in unseen]
    assert np.mean(above) >= 0.95  # and the upper bound, which decides whether timing is needed, one too
    quality = predictor.quality()
    assert quality["points"] == 12 and 0.0 <= quality["within_10pct"] <= 1.0
    assert predictor.margin <= 0.8 and predictor.upper_margin >= 1.25


def test_an_unseen_precision_gets_an_optimistic_prior():
    fp32_only = [LatencyPoint(p.macs, p.activations, False, _law(p.macs, p.activations, False)) for p in _points(8)]
    predictor = LatencyPredictor.fit(fp32_only)
    p = fp32_only[0]
    assert predictor.predict_ms(p.macs, p.activations, True) < 0.6 * predictor.predict_ms(p.macs, p.activations, False)
    # A prior bounds from below only: nothing measured says how slow an int8 model may be.
    assert predictor.upper_bound_ms(p.macs, p.activations, True) == math.inf
    assert predictor.upper_bound_ms(p.macs, p.activations, False) < math.inf


def test_the_score_rule_is_the_final_score_formula_and_its_inverses():
    rule = ScoreRule(alpha=10.0, c=1.0)
    assert rule.upper_bound(0.3, 20.0) == pytest.approx(2 ** -3 / 0.02) == pytest.approx(final_score(0.3, 0.02))
    assert ScoreRule(alpha=5.0, c=2.0).score(0.2, 100.0) == pytest.approx(final_score(0.2, 0.1, alpha=5.0, c=2.0))
    score = rule.score(0.25, 12.0)
    assert rule.si_rmse_at(score, 12.0) == pytest.approx(0.25)
    assert rule.latency_at(score, 0.25) == pytest.approx(12.0)
    assert ScoreRule(alpha=7.0, c=2.0).formula == "2^(−7·si-RMSE) / (2·runtime s)"


def test_spearman_handles_ties_and_reversal():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2, 3], [1, 1, 2, 3]) == pytest.approx(1.0)
    assert np.isnan(spearman([2, 2, 2], [1, 2, 3]))  # no ranking on one side: undefined, not 0


def test_graph_figures_grow_with_the_internal_resolution():
    small = Arch(backbone="tf_mobilenetv3_small_minimal_100", depth=4, decoder_channels=(16, 16, 8, 8),
                 skips=("add", "add", "add", "none"), blocks=("conv",) * 4, input_scale="0.25")
    large = Arch(**{**small.to_dict(), "input_scale": "0.5"})
    a, b = graph_figures(DepthNet(small), 96, 128), graph_figures(DepthNet(large), 96, 128)
    assert 0 < a["macs"] < b["macs"] and 0 < a["activations"] < b["activations"]
