"""Issue #9, device part: one measurement at a time on a device, and only true figures cached.

Real processes, the real runner, a real sshd (conftest) and real lease tables; a fake `vcgencmd`
stands in for the Pi firmware, and a fake clock for the unhealthy-mark expiry.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
import psutil
import pytest
from helpers.devices import (
    Sshd,
    local_device,
    ssh_device,
    wrapper_python,
    write_profile,
)
from sqlalchemy import func, select, text, update

from nas.hardware import LatencyMeter, MeasurementError, load_hardware
from nas.hardware.backend import EXIT_BUSY, RUNNER_PATH
from nas.hardware.cache import CACHE, MeasureSetup
from nas.hardware.kinds import backend_kinds, register_backend
from nas.hardware.local import LocalBackend
from nas.hardware.pool import LEASES


def meter_for(tmp_path: Path, url: str, data: dict[str, Any], **kw: Any) -> LatencyMeter:
    devices = load_hardware(write_profile(tmp_path / f"hw-{data['name']}.yaml", data))
    return LatencyMeter(devices, url, tmp_path / "results", holder="worker", poll_s=0.05, **kw)


def cache_rows(meter: LatencyMeter) -> int:
    with meter.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(CACHE)
                            .where(CACHE.c.device == meter.devices[0].key)).scalar_one()


def gone(pid: int) -> bool:
    """Exited (a zombie waiting for a parent that does not reap counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def gone_within(pid: int, limit_s: float = 10.0) -> bool:
    """Exited within `limit_s` (a kill is delivered at once, but a loaded machine reaps it later)."""
    deadline = time.monotonic() + limit_s
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return gone(pid)


def wait_for(path: Path, limit_s: float = 120.0) -> None:
    deadline = time.monotonic() + limit_s
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)


# ---- 1. a lease lost during the timed run --------------------------------------------------------

def _stealing(tmp_path: Path, sqlite_url: str, every: bool) -> tuple[LatencyMeter, Path, threading.Thread]:
    """A device whose timed runs wait until a 'thief' has taken the lease (every run, or the first)."""
    marker, go = tmp_path / "runs", tmp_path / "go"
    python = wrapper_python(tmp_path / "py", (
        f'case "$*" in *--model*)\n echo x >> {marker}\n'
        f' for i in $(seq 400); do [ -f {go} ] && break; sleep 0.05; done\n'
        f' {"rm -f " + str(go) if every else ":"};; esac\nexec "$PY" "$@"'))
    meter = meter_for(tmp_path, sqlite_url, local_device(python=python, retries=1))
    key = meter.devices[0].key

    def thief() -> None:
        seen = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            count = len(marker.read_text().splitlines()) if marker.exists() else 0
            if count > seen:
                seen = count
                with meter.engine.begin() as conn:  # another worker takes the (expired) lease
                    conn.execute(update(LEASES).where(LEASES.c.device == key)
                                 .values(holder="thief", expires_at=0.0))
                go.touch()
                if not every:
                    return
            time.sleep(0.02)

    thread = threading.Thread(target=thief, daemon=True)
    thread.start()
    return meter, marker, thread


def test_figure_timed_without_the_lease_is_discarded_and_retimed(tiny_model: Path, tmp_path: Path,
                                                                 sqlite_url: str) -> None:
    meter, marker, thread = _stealing(tmp_path, sqlite_url, every=False)
    messages: list[str] = []
    with meter:
        res = meter.measure(tiny_model, messages.append)
        assert not res.cached and cache_rows(meter) == 1
    thread.join(5)
    assert len(marker.read_text().splitlines()) == 2  # timed again after the lease came back
    assert any("lease lost during the timed run; figure discarded" in m for m in messages)


def test_measurement_fails_when_the_lease_keeps_being_lost(tiny_model: Path, tmp_path: Path,
                                                           sqlite_url: str) -> None:
    meter, marker, thread = _stealing(tmp_path, sqlite_url, every=True)
    with meter, pytest.raises(MeasurementError, match=r"lease lost during the timed run.*2 times"):
        meter.measure(tiny_model)
    assert cache_rows(meter) == 0 and meter.unhealthy == {}
    assert len(marker.read_text().splitlines()) == 2


# ---- 2. one runner at a time on a device ------------------------------------------------------------

def test_runner_refuses_to_time_while_another_holds_the_lock(tiny_model: Path, tmp_path: Path) -> None:
    lock = tmp_path / "runner.lock"
    args = [sys.executable, str(RUNNER_PATH), "--model", str(tiny_model), "--runs", "2", "--lock", str(lock)]
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        busy = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert busy.returncode == EXIT_BUSY and "another runner is timing" in busy.stderr
    # Told before the runtime was loaded: the busy answer carries none of the environment a loaded runtime gives.
    assert "runtime_version" not in json.loads(busy.stdout.strip().splitlines()[-1])
    free = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert free.returncode == 0, free.stderr


def test_busy_local_device_is_retried_then_skipped_not_marked(tiny_model: Path, tmp_path: Path,
                                                              sqlite_url: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # the local runner lock lives under ~/.cache
    lock = tmp_path / ".cache" / "nas-bench" / "runner.lock"
    lock.parent.mkdir(parents=True)
    meter = meter_for(tmp_path, sqlite_url, local_device(retries=1, retry_backoff_s=0.05))
    with meter:
        with open(lock, "w") as held:  # a runner left by a killed worker still times
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with pytest.raises(MeasurementError, match=r"device busy.*gave up after 2 attempts"):
                meter.measure(tiny_model)
        assert meter.unhealthy == {} and cache_rows(meter) == 0
        assert not meter.measure(tiny_model).cached  # lock released: timed


def _interrupt_when(pidfile: Path) -> threading.Thread:
    """Send SIGINT to the main thread (what Ctrl-C does) once the runner wrote its PID."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as a user's Python has it

    def fire() -> None:
        wait_for(pidfile)
        time.sleep(0.2)
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    thread = threading.Thread(target=fire, daemon=True)
    thread.start()
    return thread


def test_ctrl_c_kills_the_local_runner(tiny_model: Path, tmp_path: Path, sqlite_url: str) -> None:
    pidfile = tmp_path / "pid"
    python = wrapper_python(tmp_path / "py", f'case "$*" in *--model*) echo $$ > {pidfile}; sleep 150;; esac\n'
                                             'exec "$PY" "$@"')
    # A long timeout: on a loaded machine Ctrl-C may land seconds late, and only Ctrl-C may end this run.
    with meter_for(tmp_path, sqlite_url, local_device(python=python, measure_timeout_s=120)) as meter:
        thread = _interrupt_when(pidfile)
        with pytest.raises(KeyboardInterrupt):
            meter.measure(tiny_model)
        thread.join(5)
    assert gone_within(int(pidfile.read_text()))


def test_ctrl_c_kills_the_remote_runner(sshd: Sshd, tiny_model: Path, tmp_path: Path,
                                        sqlite_url: str) -> None:
    pidfile = tmp_path / "pid"
    python = wrapper_python(tmp_path / "py", f'case "$*" in *--model*) echo $$ > {pidfile}; sleep 150;; esac\n'
                                             'exec "$PY" "$@"')
    with meter_for(tmp_path, sqlite_url, ssh_device(sshd, tmp_path, python=python, measure_timeout_s=120)) as meter:
        thread = _interrupt_when(pidfile)
        with pytest.raises(KeyboardInterrupt):
            meter.measure(tiny_model)
        thread.join(5)
        pid = int(pidfile.read_text())
        assert gone_within(pid)


def test_reconnect_kills_the_runner_a_dropped_link_left(sshd: Sshd, tiny_model: Path, tmp_path: Path,
                                                        sqlite_url: str) -> None:
    """Only the sshd session dies (as when Wi-Fi drops): the runner under it would go on timing."""
    pidfile = tmp_path / "pid"
    python = wrapper_python(tmp_path / "py", (
        f'case "$*" in *--model*) [ -f {pidfile} ] || {{ echo $$ > {pidfile}; sleep 30; }};; esac\n'
        'exec "$PY" "$@"'))

    def drop_link() -> None:
        wait_for(pidfile)
        time.sleep(0.2)
        for proc in psutil.Process(sshd.pid).children(recursive=True):
            if proc.name().startswith("sshd"):
                proc.kill()

    thread = threading.Thread(target=drop_link, daemon=True)
    thread.start()
    messages: list[str] = []
    with meter_for(tmp_path, sqlite_url, ssh_device(sshd, tmp_path, python=python, retries=1)) as meter:
        res = meter.measure(tiny_model, messages.append)
    thread.join(5)
    assert not res.cached
    assert gone_within(int(pidfile.read_text()))  # it slept 30 s: only the reconnect's kill ended it
    assert any("killed the runner the dropped connection left running" in m for m in messages)


# ---- 3. throttled figures ------------------------------------------------------------------------

def _fake_pi(tmp_path: Path, flags: str, clear_after_run: str | None) -> str:
    """A python wrapper whose PATH has a fake vcgencmd reporting `flags` (50 °C); optionally the
    flags change to `clear_after_run` once a timed run ends."""
    fake = tmp_path / "bin"
    fake.mkdir()
    flag_file = tmp_path / "flags"
    flag_file.write_text(flags)
    (fake / "vcgencmd").write_text(f'#!/bin/sh\ncase "$1" in\n measure_temp) echo "temp=50.0\'C";;\n'
                                   f' get_throttled) echo "throttled=$(cat {flag_file})";;\n'
                                   ' *) exit 1;;\nesac\n')
    (fake / "vcgencmd").chmod(0o755)
    after = f"echo {clear_after_run} > {flag_file}; " if clear_after_run else ""
    return wrapper_python(tmp_path / "py", (
        f'export PATH={fake}:$PATH\ncase "$*" in *--model*)\n echo x >> {tmp_path / "runs"}\n'
        f' "$PY" "$@"; rc=$?; {after}exit $rc;; esac\nexec "$PY" "$@"'))


def test_throttled_run_is_discarded_and_retimed(tiny_model: Path, tmp_path: Path, sqlite_url: str) -> None:
    python = _fake_pi(tmp_path, "0x4", clear_after_run="0x50000")
    messages: list[str] = []
    with meter_for(tmp_path, sqlite_url, local_device(python=python, cooldown_s=0.01)) as meter:
        res = meter.measure(tiny_model, messages.append)
        again = meter.measure(tiny_model)
    assert res.throttled == "0x50000" and again.cached and again.throttled == "0x50000"
    assert len((tmp_path / "runs").read_text().splitlines()) == 2
    assert any("throttled during the timed run (throttled; get_throttled 0x4)" in m for m in messages)


def test_always_throttled_device_fails_with_the_reason(tiny_model: Path, tmp_path: Path,
                                                       sqlite_url: str) -> None:
    python = _fake_pi(tmp_path, "0x50001", clear_after_run=None)
    data = local_device(python=python, cooldown_s=0.01, cooldown_checks=2)
    with meter_for(tmp_path, sqlite_url, data) as meter:
        with pytest.raises(MeasurementError, match=r"under-voltage.*after 2 cool-down waits"):
            meter.measure(tiny_model)
        assert cache_rows(meter) == 0 and meter.unhealthy == {}
    assert len((tmp_path / "runs").read_text().splitlines()) == 3


# ---- 4. the cache key ----------------------------------------------------------------------------

class _Board:
    name = "board-A"


class BoardBackend(LocalBackend):
    """A local device whose board identity the test swaps (as a reinstalled Pi's host key)."""

    def board_id(self, env: dict[str, Any] | None) -> str | None:
        return _Board.name


def test_changed_profile_or_board_is_timed_again(tiny_model: Path, tmp_path: Path, sqlite_url: str) -> None:
    register_backend("test-board", BoardBackend)  # a new kind: one class and one registration
    assert "test-board" in backend_kinds()
    calls = tmp_path / "calls.log"
    python = wrapper_python(tmp_path / "py", f'echo "$*" >> {calls}\nexec "$PY" "$@"')
    base = {**local_device(python=python), "kind": "test-board"}

    def timed(**change: Any) -> bool:
        with meter_for(tmp_path, sqlite_url, {**base, **change}) as meter:
            return not meter.measure(tiny_model).cached

    assert timed()
    assert not timed()  # same setup: served from the cache
    assert timed(runs=6) and timed(warmup=2) and timed(repeats=3)  # another profile: other figures
    _Board.name = "board-B"
    assert timed()  # another board behind the same name
    _Board.name = "board-A"
    assert not timed()  # the first board's figure is still there
    runs = sum("--model" in line for line in calls.read_text().splitlines())
    assert runs == 5
    setup = MeasureSetup(1, 1, 5, "2.0", "a" * 64, "board")
    assert setup.digest() != MeasureSetup(1, 1, 5, "2.0", "b" * 64, "board").digest()  # runner


def test_old_cache_entries_are_left_unused(tiny_model: Path, tmp_path: Path, sqlite_url: str) -> None:
    data = local_device()
    with meter_for(tmp_path, sqlite_url, data) as meter:
        key = meter.devices[0].key
        with meter.engine.begin() as conn:  # a figure stored by the previous, narrower key
            conn.execute(text("CREATE TABLE nas_latency_cache (tflite_sha256 TEXT, device TEXT, "
                              "threads INT, runtime_version TEXT, median_ms REAL, record TEXT, "
                              "created_at REAL)"))
            conn.execute(text("INSERT INTO nas_latency_cache VALUES ('x', :d, 1, 'v', 1.0, '{}', 0)"),
                         {"d": key})
        assert not meter.measure(tiny_model).cached
        with meter.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM nas_latency_cache")).scalar_one() == 1


# ---- 5. outages: marks expire, trials fail early, the run exits 1 --------------------------------

def test_unhealthy_mark_expires_and_check_usable_says_why(tiny_model: Path, tmp_path: Path,
                                                          sqlite_url: str) -> None:
    down, calls = tmp_path / "down", tmp_path / "calls.log"
    down.touch()
    python = wrapper_python(tmp_path / "py", f'echo "$*" >> {calls}\n[ -f {down} ] && exit 127\n'
                                             'exec "$PY" "$@"')
    now = [1000.0]
    with meter_for(tmp_path, sqlite_url, local_device(python=python, unhealthy_s=300)) as meter:
        meter.health.clock = lambda: now[0]
        assert meter.unusable_reason() is None  # never contacted: usable
        with pytest.raises(MeasurementError, match="exit 127"):
            meter.measure(tiny_model)
        with pytest.raises(MeasurementError, match=r"no usable device: .*exit 127.*probed again in 300 s"):
            meter.check_usable()
        contacted = len(calls.read_text().splitlines())
        with pytest.raises(MeasurementError, match="no healthy device left"):
            meter.measure(tiny_model)
        assert len(calls.read_text().splitlines()) == contacted  # not contacted while marked
        down.unlink()  # the Pi is back
        now[0] += 301
        assert meter.unusable_reason() is None
        assert not meter.measure(tiny_model).cached  # probed afresh and timed
        assert meter.unhealthy == {}


def test_run_failure_only_when_every_trial_of_this_run_failed() -> None:
    from nas.commands.run import run_failure

    study = optuna.create_study()
    study.optimize(lambda t: 1.0, n_trials=1)  # an earlier run's trial
    since = datetime.now()

    def fail(trial: optuna.Trial) -> float:
        trial.set_user_attr("fail_reason", "MeasurementError: no usable device: pi down")
        raise RuntimeError("down")

    assert run_failure(study, since) is None  # nothing ran
    study.optimize(fail, n_trials=2, catch=(RuntimeError,))
    reason = run_failure(study, since)
    assert reason == "all 2 trial(s) of this run failed; last: MeasurementError: no usable device: pi down"
    study.optimize(lambda t: 2.0, n_trials=1)
    assert run_failure(study, since) is None
    assert run_failure(study, since + timedelta(days=1)) is None


# ---- 6. the SSH workdir --------------------------------------------------------------------------

def test_workdir_others_can_write_or_own_is_refused(sshd: Sshd, tiny_model: Path, tmp_path: Path,
                                                    sqlite_url: str) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with meter_for(tmp_path, sqlite_url, ssh_device(sshd, tmp_path, workdir=str(shared))) as meter, \
            pytest.raises(MeasurementError, match=r"group- or world-writable \(mode 777\)"):
        meter.measure(tiny_model)
    assert list(shared.iterdir()) == []  # no runner was put there
    if os.getuid() == 0:  # only root can give a folder away
        foreign = tmp_path / "foreign"
        foreign.mkdir(mode=0o755)
        os.chown(foreign, 65534, 65534)
        with meter_for(tmp_path, sqlite_url, ssh_device(sshd, tmp_path, workdir=str(foreign))) as meter, \
                pytest.raises(MeasurementError, match=r"owned by uid 65534, not by the login user"):
            meter.measure(tiny_model)


def test_default_workdir_is_private_under_home_and_uploads_are_verified(
        sshd: Sshd, tiny_model: Path, tmp_path: Path, sqlite_url: str) -> None:
    data = ssh_device(sshd, tmp_path)
    del data["workdir"]
    with meter_for(tmp_path, sqlite_url, data) as meter:
        assert not meter.measure(tiny_model).cached
        backend = meter._backends[meter.devices[0].key]
    home = Path(os.path.expanduser(f"~{sshd.user}"))
    workdir = home / ".cache" / "nas-bench"
    runner = workdir / backend.runner_name  # type: ignore[attr-defined]
    assert runner.read_bytes() == RUNNER_PATH.read_bytes()
    assert workdir.stat().st_mode & 0o022 == 0
    # Same name and size, other bytes (a cut or tampered upload), and a leftover part: replaced.
    runner.write_bytes(b"#" * len(RUNNER_PATH.read_bytes()))
    (workdir / "x.tflite.part-deadbeef").write_bytes(b"partial")
    data["name"] = data["name"] + "b"
    with meter_for(tmp_path, sqlite_url, data) as meter:
        assert not meter.measure(tiny_model).cached
        assert meter._backends[meter.devices[0].key].uploads[0] == runner.name  # type: ignore[attr-defined]
    assert runner.read_bytes() == RUNNER_PATH.read_bytes()
    assert not list(workdir.glob("*.part-*"))
