"""Many workers: trials per hour with 1 and 2 workers, database time per trial, SIGKILL to retry.

Three measurements at the smoke budget (tiny synthetic data, the smoke space, no teacher, the local
device), each with real `nas run` processes or the real `run_search`:

1. Database time per trial, SQLite file against PostgreSQL: one worker runs `--trials` trials in
   this process while SQLAlchemy's cursor events add up the time spent in every SQL statement
   (Optuna's storage, the device leases, the latency cache), reported per trial with the count of
   statements.
2. Trials per hour with 1 and 2 workers on one PostgreSQL study, `--trials` trials each run.
3. SIGKILL to retry: a worker is killed mid-trial (heartbeat_s 2, grace_s 10); a second worker is
   started at once; the time from the kill until the killed trial's retry starts (Optuna's
   `failed_trial` system attribute names it) and until it finishes.

Usage: python benchmarks/workers.py [--trials 6] [--postgres postgresql://postgres@127.0.0.1:5432/postgres]
Writes benchmarks/results/workers/<date>.json (or --out). Needs PostgreSQL (a database per run is created and dropped).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import yaml
from sqlalchemy import event
from sqlalchemy.engine import Engine

from common import results_path, write_result
from nas.config import load_config
from nas.commands.run.search import run_search

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # a fresh PostgreSQL database per run, as the tests make one
from helpers.outage import fresh_database  # noqa: E402
State = optuna.trial.TrialState


def smoke_settings(work: Path, storage: str, study: str, trials: int, **extra: Any) -> dict[str, Any]:
    hardware = work / "local.yaml"
    # Two workers on one machine time while the other trains: such figures are flagged `contended` after one
    # short wait rather than waited out (the count is reported).
    hardware.write_text(yaml.safe_dump({"kind": "local", "name": "local", "threads": 2, "warmup": 2, "runs": 10,
                                        "cooldown_s": 2, "cooldown_checks": 1}))
    return {"space": str(REPO / "search_spaces" / "smoke.yaml"), "budget": "smoke", "trials": trials,
            "study": study, "storage": storage, "results": str(work / "results"), "distill": False,
            "synth_train": 8, "synth_val": 2, "synth_test": 1, "baselines": "none", "hardware": str(hardware),
            **extra}


class StatementClock:
    """Wall time and count of every SQL statement any engine in this process executes."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.statements = 0
        self._started: dict[int, float] = {}

    def __enter__(self) -> StatementClock:
        event.listen(Engine, "before_cursor_execute", self._before)
        event.listen(Engine, "after_cursor_execute", self._after)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(Engine, "before_cursor_execute", self._before)
        event.remove(Engine, "after_cursor_execute", self._after)

    def _before(self, conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        self._started[id(cursor)] = time.perf_counter()

    def _after(self, conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        start = self._started.pop(id(cursor), None)
        if start is not None:
            self.seconds += time.perf_counter() - start
            self.statements += 1


def database_time(storage: str, trials: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="nas-db-time-") as tmp:
        settings = smoke_settings(Path(tmp), storage, "db-time", trials)
        config = load_config(None, **{k: v for k, v in settings.items()})
        started = time.perf_counter()
        with StatementClock() as clock:
            study = run_search(config)
        wall = time.perf_counter() - started
        done = [t for t in study.trials if t.state in (State.COMPLETE, State.PRUNED)]
    return {"trials": len(done), "db_seconds_per_trial": clock.seconds / len(done),
            "statements_per_trial": clock.statements / len(done), "wall_seconds_per_trial": wall / len(done),
            "db_share_of_wall": clock.seconds / wall}


def start_worker(config: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "nas", "run", "--config", str(config)], cwd=config.parent,
                                env=env, stdout=out, stderr=subprocess.STDOUT)


def write_config(work: Path, storage: str, study: str, trials: int, **extra: Any) -> Path:
    path = work / f"{study}.yaml"
    path.write_text(yaml.safe_dump(smoke_settings(work, storage, study, trials, **extra)))
    return path


def throughput(storage: str, workers: int, trials: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="nas-workers-") as tmp:
        work = Path(tmp)
        config = write_config(work, storage, f"w{workers}", trials)
        started = time.perf_counter()
        procs = [start_worker(config, work / f"worker{i}.log") for i in range(workers)]
        codes = [p.wait(timeout=3600) for p in procs]
        wall = time.perf_counter() - started
        study = optuna.load_study(study_name=f"w{workers}", storage=storage)
        trained = [t for t in study.trials if t.state in (State.COMPLETE, State.PRUNED)]
        contended = sum(bool(t.user_attrs.get("latency_contended")) for t in trained)
    return {"workers": workers, "exit_codes": codes, "trained_trials": len(trained), "wall_seconds": wall,
            "trials_per_hour": len(trained) / wall * 3600, "latency_contended_trials": contended}


def kill_to_retry(storage: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="nas-kill-") as tmp:
        work = Path(tmp)
        config = write_config(work, storage, "kill", 3, heartbeat_s=2, grace_s=10)
        first = start_worker(config, work / "first.log")
        victim = None
        deadline = time.monotonic() + 900
        while victim is None and time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                running = optuna.load_study(study_name="kill", storage=storage).get_trials(states=(State.RUNNING,))
            except KeyError:
                continue
            victim = next((t for t in running if "arch" in t.user_attrs), None)
        if victim is None:
            first.kill()
            raise RuntimeError("no trial started within 15 minutes")
        first.send_signal(signal.SIGKILL)
        killed_at = datetime.now()  # Optuna stamps trials with naive local time
        first.wait()
        second = start_worker(config, work / "second.log")
        code = second.wait(timeout=3600)
        study = optuna.load_study(study_name="kill", storage=storage)
        retry = next((t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number), None)
    return {"grace_s": 10, "heartbeat_s": 2, "second_worker_exit": code,
            "killed_trial_state": str(next(t.state for t in study.trials if t.number == victim.number)),
            "seconds_kill_to_retry_start": None if retry is None else (retry.datetime_start - killed_at).total_seconds(),
            "seconds_kill_to_retry_end": (None if retry is None or retry.datetime_complete is None
                                          else (retry.datetime_complete - killed_at).total_seconds())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--postgres", default=os.environ.get("NAS_TEST_POSTGRES_URL",
                                                             "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--out", type=Path, default=None,
                        help="result file (default: benchmarks/results/workers/<UTC date and time>.json)")
    args = parser.parse_args()
    out = args.out or results_path("workers")
    result: dict[str, Any] = {"trials": args.trials}
    with tempfile.TemporaryDirectory(prefix="nas-sqlite-") as tmp:
        result["db_time_sqlite"] = database_time(f"sqlite:///{tmp}/nas.db", args.trials)
    with fresh_database(args.postgres, "nas_bench") as url:
        result["db_time_postgres"] = database_time(url, args.trials)
    for workers in (1, 2):
        with fresh_database(args.postgres, "nas_bench") as url:
            result[f"throughput_{workers}_worker"] = throughput(url, workers, args.trials)
    with fresh_database(args.postgres, "nas_bench") as url:
        result["sigkill_to_retry"] = kill_to_retry(url)
    write_result("workers", result, path=out)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
