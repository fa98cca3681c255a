"""`nas report` on studies built without training: a full one, one trial, only failures, a Pareto study."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from helpers.study_builder import (
    FakeTrial,
    build_study,
    demo_trials,
    make_config,
    preset,
    searched,
)
from optuna.trial import TrialState
from optuna_dashboard import get_note, save_note

from nas.config import load_config
from nas.hardware.profile import load_hardware
from nas.metrics import ScoreRule, final_score
from nas.report import write_study_report
from nas.report.cost import reason_cause, reason_key, spread
from nas.report.figures import pareto_figure, score_levels
from nas.report.trials import pareto_front
from nas.space import load_space
from nas.trial.record import first_feasible, scored_trials
from nas.trial.study import open_study
from nas.trial.study_note import FOOTER, write_study_note


def referenced_files(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"#]+)"', html)


def assert_self_contained(folder: Path) -> str:
    """Every image or link of report.html is a file beside it (relative path), and no script is needed."""
    html = (folder / "report.html").read_text()
    for name in referenced_files(html):
        assert "/" not in name and ":" not in name, name
        assert (folder / name).is_file() and (folder / name).stat().st_size > 0, name
    assert "<script" not in html
    return html


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("demo")
    config = make_config(root / "results")
    build_study(config, demo_trials())
    out = write_study_report(config, root / "report")
    return out, assert_self_contained(out)


def test_report_names_presets_and_ranks_top_trials_with_previews(demo_report):
    out, html = demo_report
    for name in ("litedepth", "litedepth-int8", "fastdepth"):
        assert f"({name})</td>" in html  # each preset has its named row in the table
    rows = re.findall(r'<tr id="trial-(\d+)"', html)
    assert sorted(map(int, rows)) == list(range(7))  # 7 complete trials: top 10 and presets, no failed ones
    assert rows[0] == "4"  # the best Final Score (24 ms, si-RMSE 0.29) leads
    assert "Best trial: <strong>4</strong>" in html and "nas finalize --study demo" in html
    previews = sorted(p.name for p in out.glob("preview-trial-*.png"))
    assert previews == [f"preview-trial-{n}.png" for n in range(7)]
    assert (out / "preview-trial-4.png").read_bytes().startswith(b"\x89PNG")
    assert 'href="preview-trial-2.png"' in html  # the fastdepth row links its preview
    for figure in ("pareto.png", "history.png"):
        assert f'src="{figure}"' in html
    # 7 complete trials are too few for importances: a sentence with the count, no chart
    assert 'src="importances.png"' not in html and not (out / "importances.png").exists()
    assert "they need at least 10 complete trials to say more than noise, and this study has 7" in html


def test_equal_score_lines_are_drawn_through_the_best_score(demo_report, tmp_path):
    out, html = demo_report
    best = final_score(0.29, 0.024)
    levels = score_levels(best)
    assert levels[0] == pytest.approx(best) and levels[1] == pytest.approx(best / 2)
    # the caption lists the lines drawn, those that cross the chart, and only those
    config = make_config(tmp_path / "results", study="lines")
    study = build_study(config, demo_trials())
    scored = scored_trials(study.trials)
    drawn = pareto_figure(scored, first_feasible(scored), tmp_path / "pareto.png", "lines")
    assert drawn.levels and drawn.levels[0] == pytest.approx(best) and set(drawn.levels) <= set(levels)
    assert f"equal Final Score ({', '.join(f'{s:.3g}' for s in drawn.levels)})" in html
    errors = [t.user_attrs["si_rmse"] for t in scored]
    for level in set(levels) - set(drawn.levels):  # left out: off the chart at every latency shown
        assert f"{level:.3g}" not in html.split("equal Final Score (")[1].split(")")[0]
        assert all(not min(errors) - 0.03 <= ScoreRule().si_rmse_at(level, ms) <= max(errors) + 0.03
                   for ms in (24 / 1.6, 60.0, 160 * 1.6))
    assert "Pareto front" in drawn.legend and "equal Final Score" in drawn.legend and drawn.front
    # a line of equal score is the inverse of the Final Score: points on it score exactly that
    for latency_ms in (10.0, 24.0, 300.0):
        si = ScoreRule().si_rmse_at(levels[1], latency_ms)
        assert final_score(si, latency_ms / 1000) == pytest.approx(levels[1])
    assert ScoreRule().si_rmse_at(best, 24.0) == pytest.approx(0.29)


def test_the_legend_lists_only_what_is_drawn_and_sits_outside_the_axes(tmp_path):
    """A one-point front draws no line, so the legend has no front entry; no preset, no int8: no such entries."""
    config = make_config(tmp_path / "results", study="one-front")
    # the faster trial is also the more accurate: the front is that one trial
    study = build_study(config, [FakeTrial(searched("mobilenetv1_100"), si_rmse=0.25, latency_ms=20.0),
                                 FakeTrial(searched("efficientnet_b1"), si_rmse=0.30, latency_ms=80.0)])
    scored = scored_trials(study.trials)
    assert len(pareto_front(scored)) == 1
    drawn = pareto_figure(scored, first_feasible(scored), tmp_path / "pareto.png", "one front")
    assert not drawn.front and "Pareto front" not in drawn.legend
    assert drawn.legend[:2] == ["efficientnet_b1", "mobilenetv1_100"] and "fp32" in drawn.legend
    assert "int8" not in drawn.legend and "seed preset" not in drawn.legend
    assert ("equal Final Score" in drawn.legend) == bool(drawn.levels)
    out = write_study_report(config, tmp_path / "report")
    html = assert_self_contained(out)
    assert "the Pareto front is a single trial, so no line is drawn" in html and "grey line" not in html

    import matplotlib.pyplot as plt

    figures = []
    monkey = pytest.MonkeyPatch()
    close = plt.close
    monkey.setattr(plt, "close", lambda fig: (figures.append(fig), close(fig)))
    try:
        pareto_figure(scored, first_feasible(scored), tmp_path / "again.png", "one front")
    finally:
        monkey.undo()
    (ax,) = figures[0].axes
    legend_box = ax.get_legend().get_window_extent()
    assert legend_box.x0 >= ax.get_window_extent().x1  # right of the axes: it covers no line


def test_cost_groups_reasons_and_sums_stages(demo_report):
    out, html = demo_report
    assert reason_key("pruned at step 50: estimated score 0.912\nsecond line") == "pruned at step …: estimated score …"
    assert reason_key(None) == "(no reason recorded)"
    # the two pruned-while-training trials share one cause, counted 2, their figures as min–max spreads
    assert re.search(r"<td class=\"text\">PRUNED</td><td class=\"text\">pruned at step</td><td class=\"text\">"
                     r"pruned at step 50–100: estimated score 0.455–0.912 \(validation si-RMSE 0.3120–0.3501, "
                     r"predicted latency 301.0–512.4 ms\)</td><td>2</td><td class=\"text\">8, 9</td>", html)
    assert "PRUNED before training</td><td class=\"text\">latency bound</td>" in html
    assert "ExportError: onnx2tf failed on Resize</td><td>1</td>" in html and "Traceback" not in html
    # train seconds: 7 complete trials (95 + 3i) and 2 pruned while training (40 each)
    train_total = sum(95.0 + 3 * i for i in range(7)) + 80.0
    assert f"<td class=\"text\">train</td><td>{train_total:,.1f}</td><td>{train_total / 9:,.1f}</td>" in html
    summary = json.loads((out / "summary.json").read_text())
    assert summary["states"] == {"COMPLETE": 7, "FAIL": 1, "PRUNED": 3} and summary["best"]["number"] == 4
    assert summary["report"] == "report.html" and summary["importances"] is None  # 7 complete trials: too few
    with open(out / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["number"] for r in rows] == [str(n) for n in range(11)] and rows[2]["preset"] == "fastdepth"


def test_one_trial_study_explains_missing_importances(tmp_path):
    config = make_config(tmp_path / "results", study="single")
    build_study(config, [FakeTrial(preset("litedepth"), si_rmse=0.3, latency_ms=40.0, preset="litedepth")])
    out = write_study_report(config, tmp_path / "report")
    html = assert_self_contained(out)
    assert "they need at least 10 complete trials to say more than noise, and this study has 1" in html
    assert 'src="importances.png"' not in html and not (out / "importances.png").exists()
    assert "(litedepth)</td>" in html and 'src="pareto.png"' in html and 'src="preview-trial-0.png"' in html


def test_study_of_only_failed_trials_says_so_plainly(tmp_path):
    config = make_config(tmp_path / "results", study="broken")
    build_study(config, [FakeTrial(searched("mobilenetv1_100"), TrialState.FAIL,
                                   fail_reason="NasRuntimeError: device local-cpu unreachable") for _ in range(3)])
    out = write_study_report(config, tmp_path / "report")
    html = assert_self_contained(out)
    assert "No trial completed: 3 failed and 0 pruned" in html
    assert "<img" not in html and "Top trials" not in html
    assert "NasRuntimeError: device local-cpu unreachable</td><td>3</td>" in html  # one cause, no figures
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best"] is None and summary["pareto_front_trials"] == []


def test_pareto_study_is_reported_from_user_attributes(tmp_path):
    config = make_config(tmp_path / "results", study="front", objective="pareto")
    study = build_study(config, demo_trials())
    assert len(study.directions) == 2 and study.metric_names == ["si_rmse", "latency_ms"]
    out = write_study_report(config, tmp_path / "report")
    html = assert_self_contained(out)
    assert "objective: si_rmse (minimize), latency_ms (minimize)" in html
    assert "Best trial: <strong>4</strong>" in html and "(fastdepth)</td>" in html
    assert json.loads((out / "summary.json").read_text())["pareto_front_trials"] == [4, 3, 5]


def test_rerunning_the_report_replaces_its_files(demo_report, tmp_path):
    config = make_config(tmp_path / "results", study="again")
    build_study(config, demo_trials()[:2])
    out = write_study_report(config, tmp_path / "report")
    first = (out / "preview-trial-0.png").read_bytes()
    write_study_report(config, out)  # the preview files exist already: replaced, not an error
    assert (out / "preview-trial-0.png").read_bytes() == first


def test_study_note_names_the_search_and_respects_a_persons_edit(tmp_path):
    config = load_config(None, results=tmp_path, study="noted", budget="smoke")
    study = open_study(config)
    space, devices = load_space(config.space), load_hardware(config.hardware)
    write_study_note(study, config, space, devices)
    note = get_note(study)
    for text in ("## nas study `noted`", "synthetic scenes", f"`{space.name}`", f"`{devices[0].name}`",
                 "`smoke`", "fp32, int8", "**Encoder weights:** `auto`", "nas finalize --study noted", FOOTER):
        assert text in note, text
    save_note(study, "my own findings")
    write_study_note(study, config, space, devices)
    assert get_note(study) == "my own findings"


def test_metric_names_are_set_once(tmp_path):
    config = make_config(tmp_path, study="named")
    study = open_study(config)
    study.set_metric_names(["score"])
    assert open_study(config).metric_names == ["score"]  # a resumed study keeps what it has


def test_previews_are_drawn_from_each_trials_model_on_a_validation_frame(tmp_path):
    """With the study's data and models at hand: input | ground truth | prediction | error, not the stored strip."""
    from PIL import Image

    from nas.data.synth import synthesize
    from nas.hardware.check import build_reference_model

    model = build_reference_model(tmp_path / "m.tflite", 48, 64, 4)
    config = load_config(None, results=tmp_path / "results", study="drawn", deploy_height=48, deploy_width=64)
    synthesize(config.data_root, {"train": 1, "validation": 1}, seed=0, width=64, height=48)
    build_study(config, [FakeTrial(searched("mobilenetv1_100"), si_rmse=0.3, latency_ms=10.0)], model=model)
    out = write_study_report(config, tmp_path / "report")
    assert_self_contained(out)
    drawn = Image.open(out / "preview-trial-0.png")
    stored = Image.open(config.results / "previews" / "0" / "preview.png")
    assert drawn.size != stored.size and drawn.width > 4 * 64  # four panels and colour bars, not the 96×24 strip

    (config.results / "data").rename(tmp_path / "elsewhere")  # no data: the stored preview is copied instead
    out = write_study_report(config, tmp_path / "report2")
    assert Image.open(out / "preview-trial-0.png").size == stored.size


# Of demo_trials, at si-RMSE ≤ 0.28 only fastdepth (trial 2, 0.27), mobilenetv3_large_100 (3, 0.26) and efficientnet_b1
# int8 (5, 0.25) are feasible; the fastest network, trial 4 (0.29 at 24 ms), is the best Final Score without the floor.
FLOOR = 0.28


@pytest.fixture(scope="module")
def floored_study(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("floored")
    config = make_config(root / "results", study="floored", max_si_rmse=FLOOR)
    return config, build_study(config, demo_trials())


def test_an_accuracy_floor_decides_the_best_trial_everywhere(floored_study, tmp_path):
    from nas.commands.finalize.release import pick_trial
    from nas.commands.run.search import standing_line, summary_table
    from nas.trial.progress import best_score
    from nas.trial.record import is_feasible

    config, study = floored_study
    complete = {t.number: t for t in study.trials if t.state == TrialState.COMPLETE}
    assert max(complete.values(), key=lambda t: t.user_attrs["final_score"]).number == 4  # the unfloored best
    assert {n for n, t in complete.items() if is_feasible(t)} == {2, 3, 5}
    assert study.best_trial.number == 3  # Optuna's own choice, from the constraints the trials carry
    assert pick_trial(study, None).number == 3  # what `nas finalize` ships
    assert pick_trial(study, 4).number == 4  # a trial named by number is the user's call
    assert best_score(study) == (complete[3].user_attrs["final_score"], 3)  # the progress line
    line = standing_line(study)
    assert line.startswith("best searched trial 3 ") and "(fastdepth, trial 2)" in line and "within max_si_rmse 0.28" in line
    table = summary_table(study)
    assert [int(n) for n in table.columns[0]._cells] == [3, 5, 2]  # feasible only, best first; fastdepth is the preset
    assert "si-RMSE ≤ 0.28" in table.title and table.caption.startswith("4 complete trial(s) above max_si_rmse 0.28")

    out = write_study_report(config, tmp_path / "report")
    html = assert_self_contained(out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best"]["number"] == 3 and summary["max_si_rmse"] == FLOOR
    with open(out / "trials.csv") as f:
        feasible = {int(r["number"]): r["feasible"] for r in csv.DictReader(f)}
    assert feasible[3] == "True" and feasible[4] == "False" and feasible[7] == ""  # a failed trial has no verdict
    assert "Best trial: <strong>3</strong>" in html and "si-RMSE ≤ 0.28" in html
    assert re.search(r'<tr id="trial-4" class="infeasible">', html)
    assert re.search(r'<tr id="trial-0" class="preset infeasible">', html)  # litedepth, 0.31


def test_a_floor_no_trial_meets_leaves_no_best_and_says_so(tmp_path):
    from nas.commands.finalize.release import pick_trial
    from nas.errors import ConfigError

    config = make_config(tmp_path / "results", study="strict", max_si_rmse=0.1)
    study = build_study(config, demo_trials())
    with pytest.raises(ConfigError, match=r"no complete trial meets its max_si_rmse 0.1 \(the most accurate, trial 5, "
                                          r"has si-RMSE 0.2500\)"):
        pick_trial(study, None)
    out = write_study_report(config, tmp_path / "report")
    html = assert_self_contained(out)
    assert "None of the 7 complete trial(s) meets the accuracy floor" in html and "pareto.png" in html
    assert json.loads((out / "summary.json").read_text())["best"] is None


def test_the_dashboard_and_the_report_draw_one_labelled_preview(tmp_path, monkeypatch):
    """The trial's preview.png (dashboard) and the report's preview of one frame are the same image, drawn by
    `nas.data.preview.draw_preview`: four titled panels, a depth colour bar in metres, unknown pixels grey."""
    import numpy as np
    from PIL import Image

    import nas.data.preview as preview
    from nas.report.depth_previews import depth_previews
    from nas.trial.evaluate import write_preview

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    depth_mm = rng.uniform(1000, 5000, (48, 64)).astype(np.float32)
    depth_mm[:, :8] = 0  # unknown ground truth
    pred_mm = rng.uniform(1000, 5000, (48, 64)).astype(np.float32)

    drawn: list[tuple[list[str], list[str]]] = []
    close = preview.plt.close

    def keep_labels(fig):
        drawn.append(([ax.get_title() for ax in fig.axes], [ax.get_ylabel() for ax in fig.axes]))
        close(fig)

    monkeypatch.setattr(preview.plt, "close", keep_labels)
    dashboard = write_preview(tmp_path / "preview.png", rgb, depth_mm, pred_mm)
    report = depth_previews(tmp_path / "report.png", rgb[None], depth_mm[None], lambda _: pred_mm / 1000.0)
    with Image.open(dashboard) as a, Image.open(report) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))  # one function, one picture
        assert a.width > 4 * 64 * 2  # four panels and colour bars, not a bare strip
    assert len(drawn) == 2 and drawn[0] == drawn[1]
    titles, labels = drawn[0]
    assert titles[:4] == ["input", "ground truth", "prediction", "error (prediction − ground truth)"]
    assert "depth (m)" in labels and "error (m)" in labels  # the two colour bars, in metres
    assert "input | ground truth | prediction | error" in preview.CAPTION


def test_reasons_are_grouped_by_cause_with_the_spread_of_their_figures(tmp_path):
    """The compute cap screens five backbones: one row, its MMACs as a spread, not five rows of "…"."""
    cap = "compute cap: {} MMACs per frame > the space's max_mmacs 800"
    fakes = [FakeTrial(searched(backbone, scale), TrialState.PRUNED, pruned_before_training=True,
                       fail_reason=f"{backbone} at scale {scale}: " + cap.format(macs), screened_by="compute_cap")
             for backbone, scale, macs in (("efficientnet_b1", "1", 2410), ("mobilenetv1_100", "1", 1180),
                                           ("mobilenetv3_large_100", "1", 930), ("efficientnet_b1", "0.5", 1205),
                                           ("mobilenetv1_100", "128x160", 812))]
    fakes.append(FakeTrial(searched("mobilenetv1_100"), si_rmse=0.3, latency_ms=30.0))
    config = make_config(tmp_path / "results", study="capped")
    build_study(config, fakes)
    html = assert_self_contained(write_study_report(config, tmp_path / "report"))
    assert html.count("<td class=\"text\">compute cap</td>") == 1
    assert ("<td class=\"text\">compute cap: 812–2410 MMACs per frame &gt; the space&#x27;s max_mmacs 800</td>"
            "<td>5</td><td class=\"text\">0, 1, 2, 3, 4</td>") in html
    assert "…" not in html.split('id="cost"')[1]
    assert reason_cause("ExportError: onnx2tf failed on Resize") == ("ExportError: onnx2tf failed on Resize",) * 2
    assert reason_cause("pruned at step 4: score 0.31")[0] == "pruned at step"
    assert spread(["a 1 b 2.5", "a 3 b 2.5"]) == "a 1–3 b 2.5"
    assert spread(["x 1", "y 2"]) == "x … (and 1 other wording(s))"


def test_importances_rest_on_enough_trials_and_say_how_many(tmp_path):
    fakes = [FakeTrial(searched(backbone, scale, precision), si_rmse=0.22 + 0.01 * i, latency_ms=20.0 + 7 * i,
                       distill_lambda=0.05 * i)
             for i, (backbone, scale, precision) in enumerate(
                 (b, s, p) for b in ("mobilenetv1_100", "efficientnet_b1", "mobilenetv3_large_100")
                 for s, p in (("1", "fp32"), ("0.5", "int8"), ("128x160", "fp32"), ("0.5", "fp32")))]
    config = make_config(tmp_path / "results", study="enough")
    build_study(config, fakes)
    out = write_study_report(config, tmp_path / "report")
    html = assert_self_contained(out)
    assert "They rest on 12 complete trials: the top 3 by Final Score against the rest" in html
    assert '<img class="figure small" src="importances.png"' in html
    from PIL import Image

    with Image.open(out / "importances.png") as image:
        assert image.width <= 5.5 * 110 + 1  # a small figure, not half the page


def test_the_report_and_the_note_say_what_the_budget_means(demo_report, tmp_path):
    """At the quick budget the report says that predictions are coarse because of the budget, and how to get a
    usable model; the study note says the same, and records the budget for the report."""
    out, html = demo_report
    quality = html.split('id="quality"')[1].split("</p>")[0]
    for text in ("Budget <code>quick</code>: each candidate trains 150 steps × batch 8 at 160×120",
                 "rank networks against each other on short training", "coarse blob", "the budget, not the tool",
                 "<code>nas finalize --study demo --budget full</code>", "GPU", "real data", "<code>--data",
                 "pretrained encoders"):
        assert text in quality, text
    config = load_config(None, results=tmp_path, study="budgeted", budget="smoke")
    study = open_study(config)
    write_study_note(study, config, load_space(config.space), load_hardware(config.hardware))
    assert "**Quality:** Budget `smoke`: each candidate trains 12 steps" in get_note(study)
    assert study.user_attrs["budget"] == "smoke"


def test_figures_and_times_are_rounded_for_display_only(tmp_path):
    from datetime import datetime, timezone

    from nas.trial.display import rounded, when

    assert rounded(140.45613239011524, 4) == "140.5" and rounded(0.29134567) == "0.2913"
    assert rounded(250000) == "250,000" and rounded(None) == "–" and rounded(123456.7) == "123,457"
    assert when("2026-12-06T14:03:27.123456+00:00") == "2026-12-06 14:03 UTC"
    assert when("2026-12-06T15:03:27.123+01:00") == "2026-12-06 14:03 UTC"
    assert when(datetime(2026, 12, 6, 14, 3, 27, 999, tzinfo=timezone.utc)) == "2026-12-06 14:03 UTC"
    assert when("not a time") == "not a time"

    config = make_config(tmp_path / "results", study="rounded")
    study = build_study(config, [FakeTrial(searched("mobilenetv1_100"), si_rmse=0.291345678, latency_ms=140.45613239011524)])
    trial = study.trials[0]
    assert trial.user_attrs["latency_ms"] == 140.45613239011524  # the record keeps the raw value
    note = get_note(__import__("optuna").Trial(study, trial._trial_id))
    assert "140.5 ms median" in note and "si-RMSE 0.2913" in note and "140.456" not in note
    html = assert_self_contained(write_study_report(config, tmp_path / "report"))
    assert "140.45613" not in html and "0.291345" not in html
    assert re.search(r"written \d{4}-\d\d-\d\d \d\d:\d\d UTC</p>", html)


def test_the_report_groups_trials_by_device_with_their_reference_figures(tmp_path):
    """Issue #29: a Devices section (trials, median latency, flagged trials, fingerprint) and reference.png."""
    from nas.hardware.agreement import Agreement, ReferenceFigure
    from nas.infra.db import make_engine

    def at(minute: int) -> str:
        return f"2026-01-01T10:{minute:02d}:00.000+00:00"

    config = make_config(tmp_path / "results", study="pool")
    build_study(config, [
        FakeTrial(searched("mobilenetv1_100"), si_rmse=0.30, latency_ms=10.0, device="pi-a", measure_start=at(5)),
        FakeTrial(searched("mobilenetv1_100", "1"), si_rmse=0.32, latency_ms=14.0, device="pi-a",
                  measure_start=at(20)),
        FakeTrial(searched("mobilenetv1_100", "128x160"), si_rmse=0.35, latency_ms=9.0, device="pi-b",
                  measure_start=at(6))])
    engine = make_engine(config.storage_url)
    agreement = Agreement(engine, 0.1)
    for device, minute, ms, verdict in (("a", 0, 9.0, "ok"), ("b", 1, 9.1, "ok"), ("a", 10, 14.0, "out")):
        agreement.record(ReferenceFigure(device=device, name=f"pi-{device}", holder="w", time=at(minute),
                                         median_ms=ms, setup="s", fingerprint={}, verdict=verdict))
    agreement.flag("a", "pi-a", at(0), at(10), "reference 14.00 ms is 56% off its first figure")
    engine.dispose()
    out = write_study_report(config, tmp_path / "report")
    html = assert_self_contained(out)
    section = html[html.index('<h2 id="devices">'):]
    rows = re.findall(r"<tr><td class=\"text\">(pi-[ab])</td><td>(\d+)</td><td>([\d.]+)</td><td>(\d+)</td>"
                      r"<td class=\"text\">([^<]*)</td></tr>", section)
    assert [r[:4] for r in rows] == [("pi-a", "2", "12.00", "1"), ("pi-b", "1", "9.00", "0")]
    assert "Cortex-A72, kernel 6.6.31, ai_edge_litert 2.3.0, governor performance, 51.5 °C" in rows[0][4]
    assert 'src="reference.png"' in section and "3 timing(s) of the reference model; 1 judged out" in section
    summary = json.loads((out / "summary.json").read_text())
    assert [(d["device"], d["flagged"]) for d in summary["devices"]] == [("pi-a", 1), ("pi-b", 0)]


def test_a_study_without_reference_figures_has_no_reference_figure(demo_report):
    out, html = demo_report
    assert '<h2 id="devices">' in html and "reference.png" not in html
    assert not (out / "reference.png").exists()


def test_int8_trials_over_the_drift_margin_name_their_worst_layer():
    """The study page lists the table's int8 trials that recorded a worst layer, and only those."""
    from datetime import datetime

    import optuna

    from nas.report.cost import StudyCost
    from nas.report.page import ReportContent, render_page

    worst = {"layer": "model/decoder.0/conv;sigmoid<1>", "op": "LOGISTIC", "shape": [1, 24, 32, 8],
             "rel_rmse": 0.21, "growth": 0.17}
    figures = {"precision": "int8", "final_score": 0.5, "latency_ms": 3.0}
    drifted = optuna.trial.create_trial(value=0.5, user_attrs={**figures, "si_rmse": 0.31, "si_rmse_fp32": 0.25,
                                                               "int8_worst_layer": worst})
    within = optuna.trial.create_trial(value=0.6, user_attrs={**figures, "si_rmse": 0.25, "si_rmse_fp32": 0.249})
    drifted.number, within.number = 3, 4
    content = ReportContent(study_name="s", objectives="final_score (maximize)", storage="sqlite://",
                            generated=datetime.now(), trial_count=2, best=within, table=[within, drifted],
                            cost=StudyCost({}, {}, {}, 0, 0.0))
    page = render_page(content)
    section = page[page.index("<h2>int8 accuracy loss</h2>"):page.index("<h2 id=\"cost\">")]
    assert "model/decoder.0/conv;sigmoid&lt;1&gt;" in section and "LOGISTIC" in section and "+0.1700" in section
    assert section.count("<tr>") == 2  # the header and trial 3: the trial within the margin is not listed
    no_drift = render_page(ReportContent(**{**content.__dict__, "table": [within]}))
    assert "int8 accuracy loss" not in no_drift
