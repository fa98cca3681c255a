"""MAI metrics against hand-computed values (definitions: the official MAI 2021 evaluation code)."""

import math

import numpy as np
import pytest

from nas.metrics import (
    all_metrics,
    avg_log10,
    final_score,
    mean_metrics,
    rel,
    rmse,
    si_rmse,
)


def test_rmse_in_metres_over_valid_pixels_only():
    gt = np.array([[1000, 2000], [0, 4000]], dtype=np.uint16)  # 0 = unknown, ignored
    pred = np.array([[2000, 2000], [9999, 1000]], dtype=np.float32)
    # errors on valid pixels: 1 m, 0 m, 3 m -> sqrt((1 + 0 + 9) / 3)
    assert rmse(pred, gt) == pytest.approx(math.sqrt(10 / 3))


def test_si_rmse_is_invariant_to_scale_and_matches_definition():
    gt = np.array([1000.0, 2000.0, 4000.0])
    assert si_rmse(gt * 3.7, gt) == pytest.approx(0.0, abs=1e-7)
    pred = np.array([1000.0, 4000.0, 4000.0])
    d = np.log(pred) - np.log(gt)
    expected = math.sqrt(np.sum(d**2) / 3 - np.sum(d) ** 2 / 9)
    assert si_rmse(pred, gt) == pytest.approx(expected)
    assert expected > 0.3  # the case is not degenerate


def test_log10_and_rel():
    gt = np.array([1000.0, 100.0])
    pred = np.array([10000.0, 100.0])
    assert avg_log10(pred, gt) == pytest.approx(0.5)
    assert rel(pred, gt) == pytest.approx((9.0 + 0.0) / 2)


def test_clamping_below_one_and_invalid_mask():
    gt = np.array([0.5, 1.0, 1000.0])  # only 1000 is valid (target > 1 after clamping)
    pred = np.array([5000.0, 5000.0, -3.0])  # -3 clamps up to 1
    assert rmse(pred, gt) == pytest.approx((1000 - 1) / 1000)
    assert rel(pred, gt) == pytest.approx(999 / 1000)
    assert avg_log10(pred, gt) == pytest.approx(3.0)


def test_no_valid_pixel_is_an_error():
    with pytest.raises(ValueError, match="no valid pixel"):
        rmse(np.ones(4), np.zeros(4))


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        si_rmse(np.ones((2, 2)), np.ones((2, 3)))


def test_final_score_formula():
    assert final_score(0.0, 1.0) == pytest.approx(1.0)
    assert final_score(0.1, 0.5) == pytest.approx(2 ** (-1) / 0.5)
    assert final_score(0.2, 0.1, alpha=5.0, c=2.0) == pytest.approx(2 ** (-1) / 0.2)
    with pytest.raises(ValueError):
        final_score(0.1, 0.0)


def test_all_metrics_keys():
    gt = np.full((4, 4), 2000.0)
    m = all_metrics(gt * 1.1, gt)
    assert set(m) == {"si_rmse", "rmse", "log10", "rel"}
    assert m["rel"] == pytest.approx(0.1)
    assert m["rmse"] == pytest.approx(0.2)


def test_mean_metrics_is_the_mean_of_per_image_metrics_for_any_batch_size():
    rng = np.random.default_rng(0)
    gt = rng.uniform(500, 9000, size=(5, 6, 8))
    gt[3] = 0  # no valid pixel: skipped, not averaged as zero
    rgb = rng.integers(0, 255, size=(5, 6, 8, 3), dtype=np.uint8)
    preds = gt * rng.uniform(0.8, 1.2, size=gt.shape) + 10
    lookup = {rgb[i].tobytes(): preds[i] for i in range(5)}

    def predict(batch: np.ndarray) -> np.ndarray:
        return np.stack([lookup[image.tobytes()] for image in batch])

    expected = {k: np.mean([all_metrics(preds[i], gt[i])[k] for i in (0, 1, 2, 4)]) for k in ("si_rmse", "rmse")}
    for batch_size in (1, 2, 5):
        means, first = mean_metrics(predict, rgb, gt, batch_size)
        assert means["si_rmse"] == pytest.approx(expected["si_rmse"])
        assert means["rmse"] == pytest.approx(expected["rmse"])
        np.testing.assert_array_equal(first, preds[0])


def test_mean_metrics_names_the_image_with_a_non_finite_prediction():
    gt = np.full((3, 4, 4), 2000.0)
    rgb = np.zeros((3, 4, 4, 3), dtype=np.uint8)

    def predict(batch: np.ndarray) -> np.ndarray:
        out = np.full(batch.shape[:3], 1500.0)
        out[-1, 0, 0] = np.nan
        return out

    with pytest.raises(ValueError, match="image c"):
        mean_metrics(predict, rgb, gt, batch_size=3, names=["a", "b", "c"])
    assert mean_metrics(predict, rgb[:0], gt[:0]) == ({}, None)
