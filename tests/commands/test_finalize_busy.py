"""Issue #28: `nas finalize` waits for a device another runner is timing on, and a rerun reuses its training."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO
from helpers.devices import local_device, write_profile
from helpers.workers import write_config

from nas.hardware.local import LOCK_ENV


def nas(args: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "nas", *args], cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def finished(proc: subprocess.Popen, log: Path, timeout: float = 900) -> str:
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"ran over {timeout:g} s:\n{log.read_text()}")
    text = log.read_text()
    assert code == 0, text
    assert "Traceback" not in text, text
    return text


@pytest.mark.slow
def test_finalize_waits_for_a_busy_device_and_a_rerun_reuses_the_training(tmp_path):
    profile = write_profile(tmp_path / "local.yaml", local_device())  # fast timing, no wait for a quiet CPU
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'nas.db'}", "busy", trials=1, hardware=str(profile))
    lock = tmp_path / "runner.lock"
    env = {**os.environ, "PYTHONPATH": str(REPO), LOCK_ENV: str(lock)}
    finished(nas(["run", "--config", str(config)], tmp_path, env, tmp_path / "run.log"), tmp_path / "run.log")

    out, log = tmp_path / "final", tmp_path / "finalize.log"
    args = ["finalize", "--config", str(config), "--budget", "smoke", "--out", str(out)]
    with open(lock, "w") as held:  # another runner times on the device while the final model is measured
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = nas(args, tmp_path, env, log)
        deadline = time.monotonic() + 900
        while "waiting (up to" not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"finalize never waited for the busy device:\n{log.read_text()}")
            time.sleep(0.5)
        time.sleep(3)  # a few polls while busy
    text = finished(proc, log)
    assert "busy, another runner is timing on this device; waiting (up to 1800 s)" in text
    assert text.count("waiting (up to") == 1 and "no healthy device left" not in text
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["latency_ms"] > 0 and metrics["search_budget"]["name"] == "smoke" and metrics["seed"] >= 0
    kept = list((tmp_path / "results" / "cache" / "final").glob(f"busy-trial{metrics['trial']}-smoke-seed*"))
    assert len(kept) == 1 and (kept[0] / "model.pt").is_file() and (kept[0] / "trained.json").is_file()

    again = finished(nas(args, tmp_path, env, tmp_path / "again.log"), tmp_path / "again.log")
    assert "reusing the network trained earlier" in again and str(kept[0]) in again.replace("\n", "")
    assert json.loads((out / "metrics.json").read_text())["train_steps"] == metrics["train_steps"]
