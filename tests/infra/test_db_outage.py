"""The study database going away mid-search (a PostgreSQL restart, seen as dropped and refused
connections): the worker waits with back-off, fails the trial it lost with the reason, and goes on.

The outage is real at the network level: the worker reaches PostgreSQL through a TCP relay in the
test, which drops every open connection and refuses new ones for a while, as a restarting server does.
"""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
from helpers.devices import local_device, wrapper_python, write_profile
from helpers.outage import DroppingRelay
from helpers.workers import start_worker, trials_of, wait_for, write_config
from sqlalchemy.engine import make_url

from nas.errors import NasRuntimeError
from nas.infra.outage import wait_for_database

State = optuna.trial.TrialState


def test_waiting_for_the_database_backs_off_until_it_answers_or_the_limit(postgres_url: str) -> None:
    parsed = make_url(postgres_url)
    relay = DroppingRelay((parsed.host or "127.0.0.1", parsed.port or 5432))
    relay.go_down()
    waits: list[float] = []

    def sleep(seconds: float) -> None:  # the relay comes back during the third wait
        waits.append(seconds)
        if len(waits) == 3:
            relay.come_back()

    wait_for_database(relay.url(postgres_url), "db", outage_s=600, sleep=sleep)
    assert waits == [2.0, 4.0, 8.0]  # exponential back-off
    relay.go_down()
    with pytest.raises(NasRuntimeError, match="unreachable for 0 s .*outage_s = 0"):
        wait_for_database(relay.url(postgres_url), "db", outage_s=0)


@pytest.mark.slow
def test_a_worker_rides_out_a_database_restart_and_reaches_its_target(tmp_path: Path,
                                                                       fresh_postgres_url: str) -> None:
    parsed = make_url(fresh_postgres_url)
    relay = DroppingRelay((parsed.host or "127.0.0.1", parsed.port or 5432))
    storage = relay.url(fresh_postgres_url)
    config = write_config(tmp_path, storage, "outage", trials=3, heartbeat_s=1, grace_s=30, outage_s=120)
    log = tmp_path / "worker.log"
    worker = start_worker(config, log)
    try:
        wait_for("a complete trial", lambda: any(t.state == State.COMPLETE for t in trials_of(fresh_postgres_url, "outage")),
                 [worker], log)
        relay.go_down()  # 20 s: longer than any stretch of a smoke trial without a database call
        time.sleep(20)
        relay.come_back()
        assert worker.wait(timeout=600) == 0, log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
    text = log.read_text()
    trials = trials_of(fresh_postgres_url, "outage")
    assert relay.dropped > 0
    assert "lost the study database" in text and "unreachable; retrying in 2 s" in text
    assert "study database back after" in text and "Traceback" not in text
    assert sum(t.state in (State.COMPLETE, State.PRUNED) for t in trials) == 3
    assert not [t for t in trials if t.state == State.RUNNING]
    lost = [t for t in trials if t.state == State.FAIL]
    assert all("study database was unreachable" in t.user_attrs.get("fail_reason", "") for t in lost)


@pytest.mark.slow
def test_an_outage_in_the_middle_of_a_trial_fails_that_trial_and_the_run_goes_on(tmp_path: Path,
                                                                                  fresh_postgres_url: str) -> None:
    """The database goes away while the first trial times its model, so the trial's next statements (its
    figures, Optuna's own tell) fail; Optuna's clean-up then fails too (UnboundLocalError in `_run_trial`).
    The worker must wait for the database, fail that trial with the reason, and run the others."""
    parsed = make_url(fresh_postgres_url)
    relay = DroppingRelay((parsed.host or "127.0.0.1", parsed.port or 5432))
    storage = relay.url(fresh_postgres_url)
    held, go = tmp_path / "held", tmp_path / "go"
    # The first timing waits until the test has taken the database away, then runs: the trial goes on without it.
    python = wrapper_python(tmp_path / "py", (
        f'case "$*" in *--model*) if mkdir {held} 2>/dev/null; then while [ ! -e {go} ]; do sleep 0.1; done; fi;; '
        'esac\nexec "$PY" "$@"'))
    hardware = write_profile(tmp_path / "pool.yaml", {"devices": [local_device(python=python, lease_s=3)]})
    config = write_config(tmp_path, storage, "midtrial", trials=2, hardware=str(hardware), heartbeat_s=1,
                          grace_s=30, outage_s=120)
    log = tmp_path / "worker.log"
    worker = start_worker(config, log)
    try:
        wait_for("the first trial to time its model", held.exists, [worker], log)
        relay.go_down()
        go.touch()
        wait_for("the worker to notice", lambda: "lost the study database" in log.read_text(), [worker], log, 120)
        relay.come_back()
        back = time.monotonic()
        wait_for("the worker to go on", lambda: "study database back after" in log.read_text(), [worker], log, 120)
        recovered_s = time.monotonic() - back
        assert worker.wait(timeout=600) == 0, log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
    text = log.read_text()
    print(f"worker went on {recovered_s:.1f} s after the database came back")
    assert "unreachable; retrying in 2 s" in text and "Traceback" not in text, text
    trials = trials_of(fresh_postgres_url, "midtrial")
    first = trials[0]
    assert first.state == State.FAIL, text
    assert "study database was unreachable" in first.user_attrs["fail_reason"]
    assert f"trial(s) {first.number} marked failed" in text
    assert sum(t.state == State.COMPLETE for t in trials) == 2
    assert not [t for t in trials if t.state == State.RUNNING]
    assert recovered_s < 30  # the back-off's next try, not its limit
