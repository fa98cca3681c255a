"""`nas proxy-check` without training: selection, statistics, resumable re-training with a fake re-train,
bad input through the CLI, and the report's section. The end-to-end run is the one slow test at the end."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from helpers import REPO
from helpers.study_builder import build_study, demo_trials, make_config
from optuna.trial import FrozenTrial

from nas.commands.proxy_check.check import (
    SUMMARY_ATTR,
    Pair,
    agreement,
    check_and_store,
    check_request,
    ranked_trials,
    recipe,
    retrain_all,
    select,
    summary_lines,
    trial_attr,
)
from nas.config import BUDGETS
from nas.errors import ConfigError
from nas.report import write_study_report

# --- selection ---------------------------------------------------------------------------------------------

def test_select_takes_the_top_half_then_spreads_through_the_rest():
    ranked = list(range(20))  # rank order: 0 is the best
    chosen = select(ranked, 8)
    assert chosen[:4] == [0, 1, 2, 3]  # top ceil(8/2)
    assert chosen[4:] == [4, 9, 14, 19]  # the rest, its first to its last, evenly spaced
    assert select(ranked, 7) == [0, 1, 2, 3, 4, 12, 19]  # top 4, then 3 of the 16 left
    assert select(ranked, 3) == [0, 1, 10]  # a single one: the middle of the 18 left


def test_select_is_reproducible_and_never_picks_a_trial_twice():
    for n in range(3, 30):
        ranked = list(range(n))
        for k in range(3, n + 1):
            chosen = select(ranked, k)
            assert len(set(chosen)) == k == len(chosen), (n, k)
            assert chosen[0] == 0 and chosen == select(ranked, k)
    assert select(list(range(5)), 5) == [0, 1, 2, 3, 4]


def test_ranking_is_by_final_score_whatever_the_trial_order(tmp_path):
    study = build_study(make_config(tmp_path / "results"), demo_trials())
    ranked = ranked_trials(study)
    scores = [t.user_attrs["final_score"] for t in ranked]
    assert len(ranked) == 7 and scores == sorted(scores, reverse=True)
    assert ranked[0].number == 4  # the demo study's best (24 ms, si-RMSE 0.29)
    assert [t.number for t in select(ranked, 4)] == [t.number for t in ranked[:2]] + [ranked[2].number,
                                                                                       ranked[6].number]


@pytest.mark.parametrize("complete, k, words", [(7, 2, "at least 3 trials"), (2, 3, "has 2 complete trial(s)"),
                                                (7, 8, "--trials 8 is more than the 7 complete trials")])
def test_bad_requests_are_one_config_error(complete, k, words):
    with pytest.raises(ConfigError) as err:
        check_request("demo", complete, k)
    assert words in str(err.value) and "\n" not in str(err.value)


# --- statistics --------------------------------------------------------------------------------------------

def pairs(search_si: list[float], retrained_si: list[float]) -> list[Pair]:
    """Pairs whose score falls as si-RMSE rises (one latency for all), so both figures rank alike."""
    return [Pair(i, s, r, 2 ** (-10 * s), 2 ** (-10 * r)) for i, (s, r) in enumerate(zip(search_si, retrained_si))]


def test_identical_rankings_agree_fully():
    stats = agreement(pairs([0.2, 0.3, 0.4, 0.5, 0.6], [0.1, 0.15, 0.2, 0.35, 0.4]))
    for key in ("si_rmse", "final_score"):
        assert stats[key]["kendall_tau"] == pytest.approx(1.0)
        assert stats[key]["spearman_rho"] == pytest.approx(1.0)
        assert stats[key]["kendall_tau_interval"] == pytest.approx([1.0, 1.0])
    assert stats["best_stays_best"] and stats["search_best"] == 0 and stats["search_best_retrained_rank"] == 1


def test_reversed_rankings_disagree_fully():
    stats = agreement(pairs([0.2, 0.3, 0.4, 0.5], [0.6, 0.5, 0.4, 0.3]))
    assert stats["si_rmse"]["kendall_tau"] == pytest.approx(-1.0)
    assert stats["final_score"]["spearman_rho"] == pytest.approx(-1.0)
    assert stats["si_rmse"]["kendall_tau_interval"] == pytest.approx([-1.0, -1.0])
    assert not stats["best_stays_best"] and stats["search_best_retrained_rank"] == 4


def test_one_swap_of_five_gives_the_textbook_figures():
    stats = agreement(pairs([0.1, 0.2, 0.3, 0.4, 0.5], [0.1, 0.3, 0.2, 0.4, 0.5]), seed=3)
    s = stats["si_rmse"]
    assert s["kendall_tau"] == pytest.approx(0.8)  # 9 concordant, 1 discordant of 10 pairs
    assert s["spearman_rho"] == pytest.approx(0.9)  # 1 − 6·Σd²/(n(n²−1)) = 1 − 12/120
    assert s["kendall_p"] == pytest.approx(10 / 120)  # exact: 5 of 120 orders have ≤ 1 inversion, two-sided
    lo, hi = s["kendall_tau_interval"]
    assert -1 <= lo < 0.8 and hi == pytest.approx(1.0)
    assert 1500 < s["bootstrap_resamples_used"] <= 2000
    assert stats["best_stays_best"]
    again = agreement(pairs([0.1, 0.2, 0.3, 0.4, 0.5], [0.1, 0.3, 0.2, 0.4, 0.5]), seed=3)
    assert again["si_rmse"]["kendall_tau_interval"] == s["kendall_tau_interval"]  # fixed seed: reproducible


def test_a_constant_side_is_undefined_not_nan():
    stats = agreement(pairs([0.2, 0.3, 0.4], [0.3, 0.3, 0.3]))
    s = stats["si_rmse"]
    assert s["kendall_tau"] is None and s["spearman_rho"] is None and s["kendall_tau_interval"] == [None, None]
    json.dumps(stats, allow_nan=False)  # the dashboard parses it: no NaN anywhere


def test_the_searchs_best_is_ranked_by_score_not_si_rmse():
    # trial 0 is the search's best by score though not by si-RMSE (it is faster); re-trained it is second
    p = [Pair(0, 0.30, 0.30, 5.0, 4.0), Pair(1, 0.25, 0.20, 4.0, 6.0), Pair(2, 0.40, 0.50, 1.0, 1.0)]
    stats = agreement(p)
    assert stats["search_best"] == 0 and stats["search_best_retrained_rank"] == 2 and not stats["best_stays_best"]


def test_a_latency_timed_again_is_compared_at_one_latency_per_graph():
    """Trial 2's search figure was taken on a busy device (3x slow) and timed again, quiet, after re-training:
    as recorded, its score ranks it last; at one latency per graph the proxy's ranking is intact."""
    si = [0.20, 0.22, 0.24, 0.26]
    quiet_ms = [2.0, 2.0, 2.0, 2.0]
    search_ms = [2.0, 2.0, 6.0, 2.0]
    p = [Pair(i, s, s - 0.03, 2 ** (-10 * s) / t, 2 ** (-10 * (s - 0.03)) / q, t, q)
         for i, (s, t, q) in enumerate(zip(si, search_ms, quiet_ms))]
    stats = agreement(p)
    assert stats["latency_remeasured"] == [2]
    assert stats["final_score"]["kendall_tau"] < 1.0  # as recorded: trial 2 out of place
    assert stats["final_score_one_latency"]["kendall_tau"] == pytest.approx(1.0)
    assert p[2].search_score_at_retrained_latency == pytest.approx(2 ** (-10 * 0.24) / 2.0)
    assert p[0].search_score_at_retrained_latency == p[0].search_score  # same figure: unchanged
    lines = summary_lines({**stats, "study": "busy", "k": 4, "budget": "quick-x4", "retrained_this_run": 4})
    assert any(line.startswith("Final Score at one latency per graph (trials 2 timed again") and
               "Kendall tau 1.00" in line for line in lines)


# --- resumable re-training, with a fake re-train -----------------------------------------------------------

class FakeRetrain:
    """Stands in for training: the re-trained si-RMSE is the search's minus 0.05, optionally failing at a trial."""

    def __init__(self, fail_at: int | None = None):
        self.calls: list[int] = []
        self.fail_at = fail_at

    def __call__(self, trial: FrozenTrial) -> dict:
        if trial.number == self.fail_at:
            raise RuntimeError("training diverged")
        self.calls.append(trial.number)
        si = trial.user_attrs["si_rmse"] - 0.05
        return {"si_rmse": si, "final_score": 2 ** (-10 * si) / (trial.user_attrs["latency_ms"] / 1000),
                "latency_ms": trial.user_attrs["latency_ms"], "train_seconds": 1.0}


@pytest.fixture()
def demo(tmp_path):
    config = make_config(tmp_path / "results")
    study = build_study(config, demo_trials())
    ranked = ranked_trials(study)
    return config, study, ranked, select(ranked, 5)


def test_a_rerun_retrains_nothing_and_another_budget_retrains_all(demo):
    config, study, _, chosen = demo
    wanted = recipe(BUDGETS["smoke"], config)
    fake = FakeRetrain()
    entries, done = retrain_all(study, chosen, wanted, fake)
    assert done == 5 and fake.calls == [t.number for t in chosen]
    assert [e["trial"] for e in entries] == fake.calls
    reloaded = optuna.load_study(study_name=study.study_name, storage=config.storage_url)  # stored, not in memory
    assert reloaded.user_attrs[trial_attr(chosen[0].number)]["recipe"] == wanted
    again = FakeRetrain()
    entries_again, done = retrain_all(reloaded, chosen, wanted, again)
    assert done == 0 and again.calls == [] and entries_again == entries
    longer = FakeRetrain()
    _, done = retrain_all(reloaded, chosen, recipe(BUDGETS["quick"], config), longer)
    assert done == 5 and longer.calls == fake.calls
    other_seed = FakeRetrain()
    _, done = retrain_all(reloaded, chosen[:2], recipe(BUDGETS["quick"], config.model_copy(update={"seed": 1})),
                          other_seed)
    assert done == 2


def test_each_retraining_is_stored_before_the_next_starts(demo):
    config, study, _, chosen = demo
    wanted = recipe(BUDGETS["smoke"], config)
    with pytest.raises(RuntimeError, match="diverged"):
        retrain_all(study, chosen, wanted, FakeRetrain(fail_at=chosen[3].number))
    kept = {n for n in (t.number for t in chosen) if trial_attr(n) in study.user_attrs}
    assert kept == {t.number for t in chosen[:3]}
    resumed = FakeRetrain()
    _, done = retrain_all(study, chosen, wanted, resumed)
    assert done == 2 and resumed.calls == [t.number for t in chosen[3:]]


def test_check_writes_the_json_and_the_study_attribute(demo, tmp_path):
    config, study, ranked, chosen = demo
    out = tmp_path / "out" / "check.json"
    summary = check_and_store(study, ranked, chosen, recipe(BUDGETS["smoke"], config), FakeRetrain(), out)
    on_disk = json.loads(out.read_text())
    assert on_disk == json.loads(json.dumps(summary)) and study.user_attrs[SUMMARY_ATTR] == on_disk
    assert on_disk["k"] == 5 and on_disk["complete_trials"] == 7 and on_disk["budget"] == "smoke"
    assert [p["trial"] for p in on_disk["pairs"]] == [t.number for t in chosen]
    # the fake shifts every si-RMSE alike at unchanged latency: both rankings agree fully
    assert on_disk["si_rmse"]["kendall_tau"] == pytest.approx(1.0)
    assert on_disk["final_score"]["kendall_tau"] == pytest.approx(1.0)
    assert on_disk["best_stays_best"] and on_disk["search_best"] == ranked[0].number
    assert on_disk["retrained_this_run"] == 5
    first = on_disk["pairs"][0]
    assert first["search_si_rmse"] - first["retrained_si_rmse"] == pytest.approx(0.05)
    assert first["study_rank"] == first["search_rank"] == first["retrained_rank"] == 1
    lines = summary_lines(summary)
    assert "5 trials re-trained at budget smoke (5 in this run)" in lines[0]
    assert lines[1].startswith("si-RMSE: Kendall tau 1.00 (90% interval 1.00 to 1.00")
    assert lines[-1] == f"the search's best, trial {ranked[0].number}, stays the best"


def test_report_shows_the_proxy_check(demo, tmp_path):
    config, study, ranked, chosen = demo
    html_without = (write_study_report(config, tmp_path / "before") / "report.html").read_text()
    assert "Proxy check" not in html_without
    check_and_store(study, ranked, chosen, recipe(BUDGETS["smoke"], config), FakeRetrain(), tmp_path / "c.json")
    html = (write_study_report(config, tmp_path / "after") / "report.html").read_text()
    start = html.index('<h2 id="proxy-check">')
    section = html[start:html.index("<h2", start + 1)]
    assert "Kendall" in section and "Spearman" in section and "budget smoke" in section
    rows = re.findall(r'<tr class="pair"><td>(\d+)', section)
    assert rows == [str(t.number) for t in chosen]


# --- bad input through the CLI -----------------------------------------------------------------------------

def nas(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nas", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_bad_input_is_one_line_before_any_work(tmp_path):
    results = tmp_path / "results"
    config = make_config(results, study="small")
    build_study(config, demo_trials()[:2])  # two complete trials
    proc = nas("proxy-check", "--study", "small", "--results", results, "--trials", 3, "--budget", "smoke",
               cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "has 2 complete trial(s)" in proc.stderr
    proc = nas("proxy-check", "--study", "small", "--results", results, "--trials", 2, cwd=tmp_path)
    assert proc.returncode == 2 and "at least 3 trials" in proc.stderr
    config = make_config(results, study="demo")
    build_study(config, demo_trials())
    proc = nas("proxy-check", "--study", "demo", "--results", results, "--trials", 9, cwd=tmp_path)
    assert proc.returncode == 2 and "--trials 9 is more than the 7 complete trials" in proc.stderr
    assert not (results / "proxy_check").exists() and not (results / "data").exists()  # no work started


# --- end to end --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_proxy_check_end_to_end_and_resumed(tmp_path):
    work = tmp_path
    (work / "config.yaml").write_text(
        f"space: {REPO / 'search_spaces' / 'smoke.yaml'}\nbudget: smoke\ntrials: 3\nstudy: proxy\n"
        "synth_train: 8\nsynth_val: 2\nsynth_test: 1\npruner: none\nlatency_screen: false\nbaselines: none\n")
    args = ("--config", work / "config.yaml", "--results", work / "results", "--no-distill")
    run = nas("run", *args, cwd=work)
    assert run.returncode == 0, run.stderr[-3000:]
    check = nas("proxy-check", *args, "--budget", "smoke", "--trials", 3, cwd=work)
    assert check.returncode == 0, check.stderr[-3000:]
    summary = json.loads((work / "results" / "proxy_check" / "proxy.json").read_text())
    assert summary["k"] == 3 and summary["retrained_this_run"] == 3 and len(summary["pairs"]) == 3
    for key in ("si_rmse", "final_score"):
        assert summary[key]["kendall_tau"] is None or -1 <= summary[key]["kendall_tau"] <= 1
    assert 1 <= summary["search_best_retrained_rank"] <= 3
    study = optuna.load_study(study_name="proxy", storage=f"sqlite:///{work / 'results' / 'nas.db'}")
    assert study.user_attrs[SUMMARY_ATTR]["pairs"] == summary["pairs"]
    for pair in summary["pairs"]:
        entry = study.user_attrs[trial_attr(pair["trial"])]
        assert entry["si_rmse"] == pair["retrained_si_rmse"] > 0 and entry["recipe"]["budget"]["name"] == "smoke"
        assert math.isclose(entry["final_score"], 2 ** (-10 * entry["si_rmse"]) / (entry["latency_ms"] / 1000))
    assert "Kendall tau" in check.stdout and "the search's best, trial" in check.stdout
    again = nas("proxy-check", *args, "--budget", "smoke", "--trials", 3, cwd=work)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "(0 in this run)" in again.stdout and "re-training trial" not in again.stderr
    assert json.loads((work / "results" / "proxy_check" / "proxy.json").read_text())["retrained_this_run"] == 0
