"""Telling a killed worker on this machine from a live one: its trials and its scratch folders."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import optuna

from nas.infra.workers import remove_dead_scratch, worker_gone
from nas.trial.record import fail_trials_of_dead_workers, record_worker
from nas.trial.study import open_storage

State = optuna.trial.TrialState
HOST = socket.gethostname()


def dead_pid() -> int:
    gone = subprocess.Popen(["true"])
    gone.wait()
    return gone.pid


def test_a_worker_is_gone_only_when_it_ran_here_and_its_process_ended() -> None:
    pid = dead_pid()
    assert worker_gone(f"{HOST}:{pid}")
    assert not worker_gone(f"{HOST}:{os.getpid()}")  # this process
    assert not worker_gone(f"{HOST}:{os.getppid()}")  # alive
    assert not worker_gone(f"elsewhere:{pid}")  # another machine's: unknowable here
    assert not worker_gone(None) and not worker_gone("no pid")
    # A pid taken by a process started after the trial: the trial's worker is gone.
    assert worker_gone(f"{HOST}:{os.getppid()}", since=0.0)


def test_trials_of_a_dead_worker_here_fail_with_the_reason_and_are_retried_once(sqlite_url: str) -> None:
    study = optuna.create_study(storage=open_storage(sqlite_url, heartbeat_s=60, grace_s=180))
    dead, live, remote = f"{HOST}:{dead_pid()}", f"{HOST}:{os.getppid()}", f"elsewhere:{dead_pid()}"
    for worker in (dead, live, remote):
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        record_worker(trial, worker)
    (failed,) = fail_trials_of_dead_workers(study)
    assert failed.number == 0 and failed.user_attrs["fail_reason"] == f"its worker {dead} is no longer running"
    assert fail_trials_of_dead_workers(study) == []  # once
    trials = study.get_trials()
    assert [t.state for t in trials] == [State.FAIL, State.RUNNING, State.RUNNING, State.WAITING]
    assert optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(trials[3]) == 0
    assert trials[3].params == trials[0].params


def test_scratch_folders_of_dead_workers_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    gone = tmp_path / f"nas-trial-3-{dead_pid()}-abc_123"
    live = tmp_path / f"nas-trial-4-{os.getpid()}-xyz"
    unnamed = tmp_path / "nas-trial-5-q1w2e3r4"  # before scratch folders carried the pid: left alone
    for folder in (gone, live, unnamed):
        folder.mkdir()
        (folder / "model.onnx").write_bytes(b"x")
    assert remove_dead_scratch(tmp_path) == [gone]
    assert not gone.exists() and live.exists() and unnamed.exists()
