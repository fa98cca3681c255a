"""Real `nas run` workers stopped and killed: SIGTERM, then SIGKILL with two workers started at once sharing the
study.

Each worker is `python -m nas` of this checkout (not the installed console script), on the smoke space
with a tiny synthetic data set and no teacher, so that a trial takes seconds.
"""

from __future__ import annotations

import os
import signal
import socket
from datetime import datetime
from pathlib import Path

import optuna
import pytest
from helpers.devices import local_device, wrapper_python, write_profile
from helpers.workers import (
    start_worker,
    training_trial,
    trials_of,
    wait_for,
    write_config,
)
from sqlalchemy import select

from nas.hardware.pool import LEASES, db_now
from nas.infra.db import make_engine

State = optuna.trial.TrialState


@pytest.mark.slow
def test_sigterm_fails_the_running_trial_with_the_reason_and_a_rerun_resumes(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'nas.db'}"
    config = write_config(tmp_path, storage, "term", trials=1)
    log = tmp_path / "worker.log"
    worker = start_worker(config, log)
    wait_for("a trial in training", lambda: training_trial(storage, "term"), [worker], log)
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=60)
    output = log.read_text()
    assert worker.returncode == 143, output
    assert "terminated (SIGTERM): the running trial is marked failed" in output
    (trial,) = trials_of(storage, "term")
    assert trial.state == State.FAIL and trial.user_attrs["fail_reason"] == "interrupted: SIGTERM"

    rerun = start_worker(config, tmp_path / "rerun.log")
    assert rerun.wait(timeout=600) == 0, (tmp_path / "rerun.log").read_text()
    assert [t.state for t in trials_of(storage, "term")] == [State.FAIL, State.COMPLETE]


def overlapping(intervals: list[tuple[datetime, datetime]]) -> bool:
    ordered = sorted(intervals)
    return any(later[0] < earlier[1] for earlier, later in zip(ordered, ordered[1:]))


@pytest.mark.slow
def test_killed_worker_is_retried_and_two_workers_share_the_study_and_the_devices(
        fresh_postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker A is SIGKILLed while it times its first model; B and C, started at once, then finish the study.

    A's trial is failed at once with the reason (A ran on this machine and is gone: no wait for the heartbeat's
    grace) and retried once; A's scratch folder is removed; A's device lease runs out on its own (lease_s 3);
    B and C reach the study-wide target exactly, each trial run by one worker, and no device times two models
    at once.
    """
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the workers' scratch folders, where this test sees them
    storage, study, lease_s = fresh_postgres_url, "workers", 3
    held = tmp_path / "held"
    # The first timing anywhere hangs (A is killed in it); every later one runs the real runner.
    python = wrapper_python(tmp_path / "py", (
        f'case "$*" in *--model*) if mkdir {held} 2>/dev/null; then sleep 600; fi;; esac\nexec "$PY" "$@"'))
    pool = {"devices": [local_device(python=python, lease_s=lease_s), local_device(python=python, lease_s=lease_s)]}
    hardware = write_profile(tmp_path / "pool.yaml", pool)
    # The heartbeat's grace (180 s) is far longer than the test: A's trial is failed by the check that its
    # worker ran on this machine and is gone, not by a stale heartbeat.
    config = write_config(tmp_path, storage, study, trials=2, hardware=str(hardware))

    log_a = tmp_path / "a.log"
    a = start_worker(config, log_a, start_new_session=True)
    wait_for("worker A to time its model", held.exists, [a], log_a)
    os.killpg(a.pid, signal.SIGKILL)  # the worker and its runner, as the OOM killer or a lost machine would
    a.wait(timeout=30)
    engine = make_engine(storage)
    with engine.connect() as conn:
        rows = conn.execute(select(LEASES.c.holder, LEASES.c.expires_at - db_now(engine))).all()
    engine.dispose()
    (left,) = [seconds for holder, seconds in rows if holder == f"{socket.gethostname()}:{a.pid}"]
    assert left <= lease_s  # nobody renews it: the device frees itself within lease_s
    (killed,) = trials_of(storage, study)
    assert killed.state == State.RUNNING
    assert list(tmp_path.glob(f"nas-trial-*-{a.pid}-*"))  # A's scratch folder, left behind

    logs = [tmp_path / "b.log", tmp_path / "c.log"]
    workers = [start_worker(config, log) for log in logs]
    for worker, log in zip(workers, logs):
        assert worker.wait(timeout=600) == 0, log.read_text()
    output = "".join(log.read_text() for log in logs)
    dead_worker = f"{socket.gethostname()}:{a.pid}"
    assert f"trial {killed.number} failed: its worker {dead_worker} is no longer running" in output, output
    assert not list(tmp_path.glob(f"nas-trial-*-{a.pid}-*"))

    trials = trials_of(storage, study)
    assert [t.number for t in trials] == list(range(len(trials)))  # nothing lost, nothing numbered twice
    assert trials[0].state == State.FAIL and trials[0].number == killed.number  # failed, A being gone
    assert trials[0].user_attrs["fail_reason"] == f"its worker {dead_worker} is no longer running"
    assert not [t for t in trials if t.state in (State.RUNNING, State.WAITING)]
    complete = [t for t in trials if t.state == State.COMPLETE]
    assert len(complete) == 2  # the study-wide target, not two per worker
    retries = [t for t in trials if optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t)
               == killed.number]
    assert len(retries) == 1 and retries[0].state == State.COMPLETE and retries[0].params == killed.params
    assert {t.user_attrs["worker"] for t in complete} == {f"{socket.gethostname()}:{w.pid}" for w in workers}
    measured = [t.user_attrs for t in complete if not t.user_attrs["latency_cached"]]
    assert measured and {a["device"] for a in measured} <= {d["name"] for d in pool["devices"]}
    for device in {a["device"] for a in measured}:
        spans = [(datetime.fromisoformat(a["measure_start"]), datetime.fromisoformat(a["measure_end"]))
                 for a in measured if a["device"] == device]
        assert not overlapping(spans), (device, spans)
