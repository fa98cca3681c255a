"""`nas run` workers as real processes: their config files, starting them, waiting on what they write."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from helpers import REPO

State = optuna.trial.TrialState


def write_config(work: Path, storage: str, study: str, trials: int, **extra: Any) -> Path:
    config = {"space": str(REPO / "search_spaces" / "smoke.yaml"), "budget": "smoke", "trials": trials,
              "study": study, "storage": storage, "results": str(work / "results"), "distill": False,
              "synth_train": 8, "synth_val": 2, "synth_test": 1, "baselines": "none", **extra}
    path = work / f"{study}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start_worker(config: Path, log: Path, **popen: Any) -> subprocess.Popen:
    """`nas run --config CONFIG` of this checkout, its output in `log`."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "nas", "run", "--config", str(config)], cwd=config.parent,
                                env=env, stdout=out, stderr=subprocess.STDOUT, **popen)


def wait_for(what: str, check: Callable[[], Any], procs: list[subprocess.Popen], log: Path,
             timeout: float = 300) -> Any:
    """Poll `check` until it returns something true; fail if a worker exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        if any(p.poll() is not None for p in procs):
            pytest.fail(f"a worker exited while waiting for {what}:\n{log.read_text()}")
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()}")


def trials_of(storage: str, study: str) -> list[optuna.trial.FrozenTrial]:
    """The study's trials now; its connections closed at once (tests poll this every 0.2 s: engines left to the
    garbage collector ran a PostgreSQL server out of connections)."""
    store = optuna.storages.RDBStorage(storage)
    try:
        return optuna.load_study(study_name=study, storage=store).get_trials()
    except KeyError:  # not created yet
        return []
    finally:
        store.engine.dispose()


def training_trial(storage: str, study: str) -> optuna.trial.FrozenTrial | None:
    """A running trial past sampling (its arch recorded): the worker is in the middle of it."""
    return next((t for t in trials_of(storage, study) if t.state == State.RUNNING and "arch" in t.user_attrs), None)
