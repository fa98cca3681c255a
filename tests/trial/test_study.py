"""Study setup on both storages, and seed presets enqueued as ordinary trials."""

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from helpers import REPO

from nas.config import load_config
from nas.errors import ConfigError
from nas.presets import PRESETS
from nas.space import load_space
from nas.trial.baselines import enqueue_baselines, preset_points
from nas.trial.study import load_study, open_study


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A SQLite file, or the shared PostgreSQL test database (NAS_TEST_POSTGRES_URL), whose studies made
    by the test are deleted afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'nas.db'}"
        return
    url = request.getfixturevalue("postgres_url")
    before = {s.study_name for s in optuna.get_all_study_summaries(url)}
    yield url
    for summary in optuna.get_all_study_summaries(url):
        if summary.study_name not in before:
            optuna.delete_study(study_name=summary.study_name, storage=url)


def test_study_is_created_then_resumed_with_presets_enqueued_once(tmp_path, storage_url):
    config = load_config(None, storage=storage_url, study=f"t-{uuid.uuid4().hex[:8]}", results=tmp_path)
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
    smoke = load_space(REPO / "search_spaces" / "smoke.yaml")
    assert enqueue_baselines(study, smoke, ["litedepth"]) == 0  # not a point of that space: skipped
    with pytest.raises(ConfigError, match="unknown preset.*litedepht"):
        load_config(None, baselines=["litedepht"])


def test_pareto_objective_has_two_named_minimised_metrics(tmp_path):
    config = load_config(None, objective="pareto", results=tmp_path, study="p")
    study = open_study(config)
    assert study.metric_names == ["si_rmse", "latency_ms"]
    assert study.directions == [optuna.study.StudyDirection.MINIMIZE] * 2


def test_load_study_names_a_missing_study_or_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    with pytest.raises(ConfigError, match="no study database at"):  # and creates none (tests/commands)
        load_study(url, "nope")
    assert not (tmp_path / "nas.db").exists()
    config = load_config(None, storage=url, study="there", results=tmp_path)
    open_study(config)
    with pytest.raises(ConfigError, match=f"no study 'nope' in {url}"):
        load_study(url, "nope")
    assert load_study(url, "there").study_name == "there"


OPEN_STUDY = """
import sys, time
from pathlib import Path
from nas.config import load_config
from nas.trial.study import open_study
go = Path(sys.argv[2])
Path(sys.argv[4]).touch()
while not go.exists():  # imports done: wait for the others, then all open at once
    time.sleep(0.01)
study = open_study(load_config(None, storage=sys.argv[1], study="together", results=sys.argv[3]))
print(study._study_id)
"""


def test_workers_started_together_on_an_empty_database_all_come_up(fresh_postgres_url, tmp_path):
    """Optuna creates its schema without a lock; four workers at once must still all open one study."""
    go = tmp_path / "go"
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    ready = [tmp_path / f"ready-{i}" for i in range(4)]
    workers = [subprocess.Popen([sys.executable, "-c", OPEN_STUDY, fresh_postgres_url, str(go), str(tmp_path),
                                 str(flag)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for flag in ready]
    deadline = time.monotonic() + 120
    while not all(flag.exists() for flag in ready) and time.monotonic() < deadline:
        time.sleep(0.05)  # every worker has imported: they race for the schema from the same moment
    go.touch()
    results = [w.communicate(timeout=120) for w in workers]
    for w, (out, err) in zip(workers, results):
        assert w.returncode == 0, err
    assert len({out.strip() for out, _ in results}) == 1  # one study, seen by all
    summaries = optuna.get_all_study_summaries(fresh_postgres_url)
    assert [s.study_name for s in summaries] == ["together"]


def test_a_joining_worker_does_not_repeat_the_first_workers_points(tmp_path, monkeypatch):
    import nas.trial.study

    url = f"sqlite:///{tmp_path / 'nas.db'}"

    def first_x(study: optuna.Study) -> float:
        return study.ask().suggest_float("x", 0.0, 1.0)

    config = load_config(None, storage=url, study="shared", results=tmp_path, sampler="random")
    creator = open_study(config)
    reopened = open_study(config)  # the same process opening it again keeps its seed
    monkeypatch.setattr(nas.trial.study, "_SEEDS", {})  # as in another process: a worker joining the study
    joiner = open_study(config)
    assert first_x(creator) == first_x(reopened) != first_x(joiner)
    # the process that creates a study stays reproducible from `seed`
    again = open_study(load_config(None, storage=url, study="other", results=tmp_path, sampler="random"))
    assert first_x(again) == first_x(optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)))


def test_heartbeat_settings_reach_the_storage_and_grace_must_outlast_the_heartbeat(tmp_path):
    config = load_config(None, storage=f"sqlite:///{tmp_path / 'nas.db'}", study="beat", results=tmp_path,
                         heartbeat_s=2, grace_s=5)
    assert open_study(config)._storage.get_heartbeat_interval() == 2
    assert load_config(None).heartbeat_s == 60 and load_config(None).grace_s == 180
    with pytest.raises(ConfigError, match=r"grace_s \(10\) must exceed heartbeat_s \(10\)"):
        load_config(None, heartbeat_s=10, grace_s=10)


def test_tpe_leaves_random_sampling_within_a_short_run(tmp_path):
    from nas.trial.study import tpe_startup_trials

    assert [tpe_startup_trials(n) for n in (2, 6, 12, 30, 200)] == [3, 3, 4, 10, 10]
    study = open_study(load_config(None, storage=f"sqlite:///{tmp_path / 'nas.db'}", study="short", trials=6,
                                   results=tmp_path))
    assert study.sampler._n_startup_trials == 3


def test_tpe_learns_on_the_conditional_mission_space():
    """After its random start, TPE (multivariate, grouped) must find cheaper decoders than random did on
    the real space, whose per-stage parameters come and go with the sampled depth."""
    from nas.space import load_space
    from nas.trial.study import make_tpe_sampler

    space = load_space(load_config(None).space)
    study = optuna.create_study(sampler=make_tpe_sampler(seed=0, trials=12), direction="minimize")

    def decoder_width(trial: optuna.Trial) -> float:
        arch, _ = space.sample(trial)
        return float(sum(arch.decoder_channels))

    study.optimize(decoder_width, n_trials=24)
    values = [t.value for t in study.trials]
    startup = 4  # tpe_startup_trials(12)
    assert min(values[startup:]) < min(values[:startup])
    assert sum(values[-8:]) / 8 < sum(values[:startup]) / startup


def test_a_studys_accuracy_floor_is_set_when_it_is_created_and_kept(tmp_path):
    def config(study: str, floor: float | None):
        return load_config(None, study=study, results=tmp_path, max_si_rmse=floor)

    assert open_study(config("floored", 0.3)).user_attrs["max_si_rmse"] == 0.3
    assert open_study(config("floored", 0.3)).user_attrs["max_si_rmse"] == 0.3  # resumed with the same floor
    for changed, shown in ((0.25, "0.25"), (None, "none")):
        with pytest.raises(ConfigError) as err:
            open_study(config("floored", changed))
        assert f"created with max_si_rmse 0.3, this run asks for {shown}" in str(err.value)
        assert "new --study" in str(err.value)
    assert open_study(config("open", None)).user_attrs["max_si_rmse"] is None
    with pytest.raises(ConfigError, match="created with max_si_rmse none, this run asks for 0.2"):
        open_study(config("open", 0.2))
    with pytest.raises(ConfigError, match="--max-si-rmse: Input should be greater than 0"):  # named as the flag
        config("bad", 0.0)


def test_a_running_trial_ranks_among_the_complete_feasible_ones(tmp_path):
    from helpers.study_builder import FakeTrial, build_study, make_config, searched

    from nas.trial.record import rank_among, ranked_trials, score_of

    config = make_config(tmp_path / "results", max_si_rmse=0.5)
    study = build_study(config, [FakeTrial(searched("mobilenetv1_100"), si_rmse=0.3, latency_ms=10.0),
                                 FakeTrial(searched("mobilenetv1_100"), si_rmse=0.3, latency_ms=20.0),
                                 FakeTrial(searched("mobilenetv1_100"), si_rmse=0.9, latency_ms=1.0)])  # infeasible
    best, second = ranked_trials(study)
    assert len(ranked_trials(study, feasible_only=False)) == 3
    above = score_of(best) * 2  # better than every trial, the infeasible fastest one too
    assert rank_among(study, above, 99) == 1
    assert rank_among(study, (score_of(best) + score_of(second)) / 2, 99) == 2
    assert rank_among(study, score_of(second), 99) == 3  # a tie goes to the lower trial number
    assert rank_among(study, score_of(second) / 2, 99) == 3
