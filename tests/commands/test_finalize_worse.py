"""Issue #28: `nas finalize` says loudly when the final model scores well below its search trial, and why."""

from __future__ import annotations

import json

import optuna
import pytest

from nas.config import BUDGETS


def trial(score: float | None = 140.5, si_rmse: float = 0.12, latency_ms: float = 2.0,
          budget: str | None = "quick"):
    attrs = {"si_rmse": si_rmse, "latency_ms": latency_ms}
    if score is not None:
        attrs["final_score"] = score
    if budget is not None:
        attrs["budget"] = BUDGETS[budget].model_dump()
    return optuna.trial.create_trial(value=score or 1.0, user_attrs=attrs)


def test_a_final_model_within_ten_percent_of_its_search_trial_is_not_called_out():
    from nas.commands.finalize.release import worse_than_search

    assert worse_than_search(130.0, 0.13, 2.0, trial(), BUDGETS["quick"]) is None
    assert worse_than_search(150.0, 0.11, 2.0, trial(), BUDGETS["smoke"]) is None  # better: nothing to say
    assert worse_than_search(1.0, 0.9, 9.0, trial(score=None), BUDGETS["smoke"]) is None  # nothing to compare


def test_a_smaller_budget_is_named_as_the_likely_reason():
    from nas.commands.finalize.release import worse_line, worse_than_search

    worse = worse_than_search(18.4, 0.41, 2.0, trial(), BUDGETS["smoke"])
    assert worse["ratio"] == pytest.approx(18.4 / 140.5, abs=1e-4) and worse["smaller_budget"] is True
    assert worse["budget"] == "smoke" and worse["search_budget"] == "quick"
    assert "smaller budget than the search's" in worse["reason"] and "12 steps against 150" in worse["reason"]
    assert "--budget quick" in worse["reason"]
    assert worse["figures"] == "si-RMSE 0.4100 against 0.1200"  # the latency is no worse
    line = worse_line(worse, 3)
    assert line.startswith("the final model's Final Score 18.4000 is 13% of its search trial 3's 140.5000")
    assert "likely reason: a smaller budget" in line


def test_the_same_budget_points_at_the_run_or_at_the_timing():
    from nas.commands.finalize.release import worse_than_search

    run = worse_than_search(18.4, 0.41, 2.0, trial(budget="smoke"), BUDGETS["smoke"])
    assert run["smaller_budget"] is False and run["reason"].startswith("a worse training run")
    timing = worse_than_search(18.4, 0.12, 15.0, trial(budget="smoke"), BUDGETS["smoke"])
    assert timing["reason"].startswith("a slower timing") and "latency 15.0 ms against 2.0 ms" in timing["figures"]
    older = worse_than_search(18.4, 0.41, 2.0, trial(budget=None), BUDGETS["smoke"])
    assert "not recorded" in older["reason"] and older["search_budget"] is None


def release_record(worse: dict | None) -> dict:
    record = {"study": "demo", "trial": 3, "arch": {"backbone": "mobilenetv3_small_100"}, "precision": "fp32",
              "metrics": {"si_rmse": 0.41, "rmse": 1.2, "log10": 0.1, "rel": 0.2}, "si_rmse": 0.41,
              "final_score": 18.4, "score_formula": "2^(−10·si-RMSE) / (1·runtime s)", "val_images": 2,
              "resolution": "320×240", "device": "local", "latency_ms": 2.0, "latency_p90_ms": 2.1, "threads": 4,
              "params": 1000, "macs": 2_000_000, "tflite_bytes": 50_000, "budget": "smoke", "train_steps": 12,
              "train_seconds": 3.0, "search_score": 140.5, "search_si_rmse": 0.12, "created": "2025-01-01"}
    if worse is not None:
        record["worse_than_search"] = worse
    return record


def test_the_release_files_carry_the_warning(tmp_path):
    from nas.commands.finalize.release import worse_line, worse_than_search, write_model_report
    from nas.report.model_page import write_model_page

    worse = worse_than_search(18.4, 0.41, 2.0, trial(), BUDGETS["smoke"])
    worse = {**worse, "line": worse_line(worse, 3)}
    json.dumps(worse)  # metrics.json holds it as it is
    record = release_record(worse)
    markdown = write_model_report(tmp_path, record).read_text()
    assert "**Warning:** the final model's Final Score 18.4000 is 13% of its search trial 3's" in markdown
    html = write_model_page(tmp_path, record, None, "no previews").read_text()
    assert '<p class="warning"><strong>Worse than its search trial:</strong>' in html
    assert "smaller budget than the search&#x27;s" in html

    plain = release_record(None)
    assert "Warning" not in write_model_report(tmp_path, plain).read_text()
    assert "Worse than its search trial" not in write_model_page(tmp_path, plain, None, "none").read_text()
