"""The study line printed as each trial starts, and stage progress that stays out of log files."""

from __future__ import annotations

import io
import time
from datetime import datetime, timedelta

import optuna
import pytest
from optuna.trial import TrialState, create_trial
from rich.console import Console

from nas.trial import pipeline
from nas.trial.progress import StudyProgress, hh_mm, study_line


def test_hh_mm_rounds_to_the_minute():
    assert hh_mm(0) == "00:00"
    assert hh_mm(29) == "00:00" and hh_mm(31) == "00:01"
    assert hh_mm(3 * 3600 + 25 * 60) == "03:25"
    assert hh_mm(-5) == "00:00"


def test_study_line_text():
    assert study_line(9, 4, 10, 3, (1.23456, 7), 2 * 3600 + 5 * 60, 600.0) == \
        "trial 9: trained 4 of 10, 3 screened before training, best 1.235 (trial 7), elapsed 02:05, about 01:00 left"
    # No finished trial in this run yet: no estimate; no complete trial: no score; none screened: not said.
    assert study_line(0, 0, 6, 0, None, 42.0, None) == "trial 0: trained 0 of 6, no score yet, elapsed 00:01"


def trial(state: TrialState, minutes: float, score: float | None = None, screened: bool = False
          ) -> optuna.trial.FrozenTrial:
    attrs = {"final_score": score} if score is not None else {}
    if screened:
        attrs["pruned_before_training"] = True
    t = create_trial(state=state, value=score if state == TrialState.COMPLETE else None, user_attrs=attrs)
    t.datetime_start = datetime(2025, 1, 1, 12, 0)
    t.datetime_complete = t.datetime_start + timedelta(minutes=minutes)
    return t


def test_study_progress_counts_trained_trials_and_estimates_from_this_run():
    study = optuna.create_study(direction="maximize")
    now = [1000.0]
    progress = StudyProgress(target=6, clock=lambda: now[0])
    assert progress.line(study, 0) == "trial 0: trained 0 of 6, no score yet, elapsed 00:00"

    earlier = trial(TrialState.COMPLETE, 50, score=2.5)  # from an earlier run: counts, but is not timed
    study.add_trial(earlier)
    for t in (trial(TrialState.COMPLETE, 10, score=3.25), trial(TrialState.PRUNED, 6),
              trial(TrialState.PRUNED, 0.1, screened=True), trial(TrialState.FAIL, 1)):
        study.add_trial(t)
        progress(study, t)
    now[0] += 20 * 60
    # Trained: 2.5, 3.25 and the pruned one (not the screened or failed one) -> 3 of 6, the 4th starts.
    # This run's trained trials took 10 and 6 minutes: 8 on average, 3 left -> 24 minutes.
    assert progress.line(study, 5) == \
        "trial 5: trained 3 of 6, 1 screened before training, best 3.250 (trial 1), elapsed 00:20, about 00:24 left"


def test_study_line_takes_the_best_final_score_of_a_pareto_study():
    study = optuna.create_study(directions=["minimize", "minimize"])
    for si, ms, score in ((0.3, 40.0, 4.0), (0.2, 90.0, 2.8)):
        study.add_trial(create_trial(state=TrialState.COMPLETE, values=[si, ms], user_attrs={"final_score": score}))
    assert "best 4.000 (trial 0)" in StudyProgress(target=5).line(study, 2)


@pytest.mark.parametrize("terminal", [False, True])
def test_stage_spinner_draws_only_on_a_terminal(monkeypatch, terminal):
    out = io.StringIO()
    monkeypatch.setattr(pipeline, "console", Console(file=out, force_terminal=terminal, width=100))
    with pipeline.stage_spinner("trial 3", "evaluate", "frames") as update:
        update(2, 8)
        time.sleep(0.25)  # a refresh or two
    text = out.getvalue()
    if terminal:
        assert "trial 3: evaluate" in text and "2/8 frames" in text and "0:00:00" in text
    else:  # a log file: nothing at all, no carriage returns or cursor moves
        assert text == ""


def test_training_bar_stays_out_of_log_files(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(pipeline, "console", Console(file=out, force_terminal=False, width=100))
    progress, update = pipeline._progress("trial 3 training on 160×120 crops")
    with progress:
        update(5, 10, 0.5)
        time.sleep(0.25)
    assert out.getvalue() == ""


def test_status_spinners_stay_out_of_log_files():
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=100)
    with console.status("drawing previews on test images"):
        time.sleep(0.25)
    assert out.getvalue() == ""


def test_the_objective_prints_the_study_line_as_each_trial_starts(tmp_path, capsys):
    from types import SimpleNamespace

    from nas.config import load_config
    from nas.space import load_space
    from nas.trial.objective import TrialObjective

    space_file = tmp_path / "space.yaml"  # RFDB with an odd width cannot be built: pruned at once, no training
    space_file.write_text("params:\n  depth: {choices: [4]}\n"
                          "  decoder_channels: {per_stage: true, choices: [15]}\n"
                          "  blocks: {per_stage: true, choices: [rfdb]}\n")
    ctx = SimpleNamespace(config=load_config(None, results=tmp_path), space=load_space(space_file))
    study = optuna.create_study(direction="maximize")
    progress = StudyProgress(target=3)
    study.optimize(TrialObjective(ctx, store=None, progress=progress), n_trials=2, callbacks=[progress])
    lines = [line for line in capsys.readouterr().err.splitlines() if " of 3" in line]
    assert lines[0] == "trial 0: trained 0 of 3, no score yet, elapsed 00:00"
    assert lines[1].startswith("trial 1: trained 1 of 3, no score yet, elapsed 00:00, about 00:00 left")
    assert len(lines) == 2
