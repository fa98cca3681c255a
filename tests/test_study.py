"""Study setup on both storages, and seed presets enqueued as ordinary trials."""

import uuid
from pathlib import Path

import optuna
import pytest

from nas.config import load_config
from nas.errors import ConfigError
from nas.presets import PRESETS
from nas.search import enqueue_baselines, preset_points
from nas.space import load_space
from nas.study import load_study, open_study

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.mark.parametrize("storage", ["sqlite", "postgresql"])
def test_study_is_created_then_resumed_with_presets_enqueued_once(tmp_path, storage):
    url = f"sqlite:///{tmp_path / 'nas.db'}" if storage == "sqlite" else POSTGRES
    config = load_config(None, storage=url, study=f"t-{uuid.uuid4().hex[:8]}", results=tmp_path)
    study = open_study(config)
    assert study.metric_names == ["final_score"]
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    space = load_space(config.space)
    points = preset_points(space)  # every preset in fp32 and int8
    assert len(points) == 2 * len(PRESETS) and points["litedepth-int8"].precision == "int8"
    assert enqueue_baselines(study, space) == len(points)
    again = open_study(config)  # resume: same study, nothing enqueued twice
    assert enqueue_baselines(again, space) == 0
    waiting = again.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert len(waiting) == len(points)
    # the first asked trial samples exactly the enqueued preset: the cheapest one comes first
    trial = again.ask()
    arch, _ = space.sample(trial)
    assert trial.user_attrs["preset"] == "litedepth" and arch == points["litedepth"]


def test_named_baselines_are_enqueued_in_order_and_unknown_names_are_refused(tmp_path):
    config = load_config(None, storage=f"sqlite:///{tmp_path / 'nas.db'}", study="named", results=tmp_path)
    assert config.baselines == ["litedepth"]  # the default starts from the best-known preset only
    study = open_study(config)
    space = load_space(config.space)
    assert enqueue_baselines(study, space, ["fastdepth-int8", "litedepth"]) == 2
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [t.user_attrs["preset"] for t in waiting] == ["fastdepth-int8", "litedepth"]
    smoke = load_space(Path(__file__).parents[1] / "search_spaces" / "smoke.yaml")
    assert enqueue_baselines(study, smoke, ["litedepth"]) == 0  # not a point of that space: skipped
    with pytest.raises(ConfigError, match="unknown preset.*litedepht"):
        load_config(None, baselines=["litedepht"])


def test_pareto_objective_has_two_named_minimised_metrics(tmp_path):
    config = load_config(None, objective="pareto", results=tmp_path, study="p")
    study = open_study(config)
    assert study.metric_names == ["si_rmse", "latency_ms"]
    assert study.directions == [optuna.study.StudyDirection.MINIMIZE] * 2


def test_load_study_names_a_missing_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    with pytest.raises(ConfigError, match=f"no study 'nope' in {url}"):
        load_study(url, "nope")
    config = load_config(None, storage=url, study="there", results=tmp_path)
    open_study(config)
    assert load_study(url, "there").study_name == "there"
