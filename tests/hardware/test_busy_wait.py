"""Issue #28: a device another runner is timing on is waited for (by a meter that is told to), not dropped."""

from __future__ import annotations

import fcntl
import threading
import time
from pathlib import Path

import pytest
from helpers.devices import local_device, write_profile

from nas.hardware import LatencyMeter, MeasurementError, load_hardware
from nas.hardware.local import LOCK_ENV


def held_for(lock: Path, seconds: float) -> threading.Thread:
    """Hold `lock` as a timing runner does (an exclusive flock) for `seconds`, from a thread."""
    handle = open(lock, "w")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def release() -> None:
        time.sleep(seconds)
        handle.close()

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    return thread


def meter(tmp_path: Path, url: str, **kw) -> LatencyMeter:
    data = local_device(retries=1, retry_backoff_s=0.05)
    devices = load_hardware(write_profile(tmp_path / "hw.yaml", data))
    return LatencyMeter(devices, url, tmp_path / "results", holder="worker", poll_s=0.2, use_cache=False, **kw)


def test_a_busy_device_is_waited_for_and_then_timed(tiny_model, tmp_path, sqlite_url, monkeypatch):
    lock = tmp_path / "runner.lock"
    monkeypatch.setenv(LOCK_ENV, str(lock))
    lines: list[str] = []
    with meter(tmp_path, sqlite_url, busy_wait_s=60, busy_poll_s=0.2) as m:
        holder = held_for(lock, 3.0)
        result = m.measure(tiny_model, lines.append)
        holder.join()
    waits = [line for line in lines if "busy, another runner is timing on this device; waiting (up to 60 s)" in line]
    assert len(waits) == 1, lines  # said once, however many tries
    assert len([line for line in lines if ": timing " in line]) == 1, lines
    assert waits[0].startswith(m.devices[0].name + ": ")
    assert result.median_ms > 0 and not result.cached and m.unhealthy == {}


def test_the_wait_is_bounded_and_a_search_meter_does_not_wait(tiny_model, tmp_path, sqlite_url, monkeypatch):
    lock = tmp_path / "runner.lock"
    monkeypatch.setenv(LOCK_ENV, str(lock))
    lines: list[str] = []
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with meter(tmp_path, sqlite_url, busy_wait_s=1) as m, \
                pytest.raises(MeasurementError, match=r"device busy.*still busy after waiting 1 s"):
            m.measure(tiny_model, lines.append)
        assert any("waiting (up to 1 s)" in line for line in lines)
        lines.clear()
        with meter(tmp_path, sqlite_url) as m, pytest.raises(MeasurementError, match=r"gave up after 2 attempts"):
            m.measure(tiny_model, lines.append)
        assert not any("waiting" in line for line in lines)  # a search's meter moves on
