"""`nas run` short of its target only by a trial another worker runs: it waits for that trial, saying so."""

from __future__ import annotations

import threading
import time

import optuna

from nas.commands.run.search import wait_for_others
from nas.infra.console import err as console
from nas.trial.record import record_worker
from nas.trial.study import open_storage

X = {"x": optuna.distributions.FloatDistribution(0, 1)}


def test_a_run_waits_for_a_live_trial_elsewhere_and_ends_once_the_target_is_reached(sqlite_url: str) -> None:
    study = optuna.create_study(storage=open_storage(sqlite_url, heartbeat_s=60, grace_s=180))
    study.add_trial(optuna.trial.create_trial(params={"x": 0.5}, distributions=X, value=1.0))
    elsewhere = study.ask(X)
    record_worker(elsewhere, "elsewhere:123")
    finish = threading.Timer(1.0, lambda: study.tell(elsewhere, 2.0))
    finish.start()
    started = time.monotonic()
    with console.capture() as captured:
        assert wait_for_others(study, target=2, grace_s=180, poll_s=0.1, deadline=None) is False
    assert time.monotonic() - started >= 0.9  # it waited for the trial rather than ending short
    (line,) = captured.get().strip().splitlines()
    assert line.startswith("waiting for trial 1 of worker elsewhere:123: the target needs it; if that worker is "
                           "dead, its heartbeat expires by ")


def test_a_run_short_of_its_target_runs_trials_and_one_at_its_target_does_not(sqlite_url: str) -> None:
    study = optuna.create_study(storage=open_storage(sqlite_url, heartbeat_s=60, grace_s=180))
    assert wait_for_others(study, target=1, grace_s=180, poll_s=0.1, deadline=None) is True
    study.add_trial(optuna.trial.create_trial(params={"x": 0.5}, distributions=X, value=1.0))
    assert wait_for_others(study, target=1, grace_s=180, poll_s=0.1, deadline=None) is False
    record_worker(study.ask(X), "elsewhere:123")  # at the deadline, a run stops waiting
    assert wait_for_others(study, target=2, grace_s=180, poll_s=0.1, deadline=time.monotonic()) is False
