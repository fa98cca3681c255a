"""Device leases: one worker times on a device at a time, on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from helpers.devices import local_device, wrapper_python, write_profile
from sqlalchemy import delete, update

from nas.hardware import LatencyMeter, LatencyResult, MeasurementError, load_hardware
from nas.hardware.cache import CACHE
from nas.hardware.pool import LEASES, LeasePool
from nas.infra.db import make_engine


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    if request.param == "sqlite":
        return sqlite_url
    return request.getfixturevalue("postgres_url")


def devices_for(tmp_path: Path, **fields: object) -> list:
    return load_hardware(write_profile(tmp_path / "hw.yaml", local_device(**fields)))


def cleanup(url: str, key: str) -> None:
    """Remove this test's rows (the PostgreSQL database outlives the test run)."""
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(delete(LEASES).where(LEASES.c.device == key))
        conn.execute(delete(CACHE).where(CACHE.c.device == key))
    engine.dispose()


def test_second_worker_waits_for_release(tiny_model: Path, tmp_path: Path, storage_url: str) -> None:
    devices = devices_for(tmp_path)
    key = devices[0].key
    a = LatencyMeter(devices, storage_url, tmp_path, holder="worker-A", poll_s=0.05)
    b = LatencyMeter(devices, storage_url, tmp_path, holder="worker-B", poll_s=0.05)
    try:
        assert a.pool.try_acquire(key, 60)  # A is timing on the device
        messages: list[str] = []
        results: list[LatencyResult] = []
        thread = threading.Thread(target=lambda: results.append(b.measure(tiny_model, messages.append)))
        thread.start()
        time.sleep(0.6)
        assert not results, "B timed while A held the lease"
        assert any("waiting for a free device" in m and "held by worker-A" in m for m in messages)
        a.pool.release(key)
        thread.join(30)
        assert results and not results[0].cached
        assert b.pool.holders([key]) == {}  # B released after timing
    finally:
        a.close()
        b.close()
        cleanup(storage_url, key)


def test_expired_lease_is_taken_over(tiny_model: Path, tmp_path: Path, storage_url: str) -> None:
    devices = devices_for(tmp_path)
    key = devices[0].key
    dead = LeasePool(make_engine(storage_url), "dead-worker")
    try:
        assert dead.try_acquire(key, 60)
        with dead.engine.begin() as conn:  # the worker died long ago: its lease has run out
            conn.execute(update(LEASES).where(LEASES.c.device == key).values(expires_at=0.0))
        messages: list[str] = []
        with LatencyMeter(devices, storage_url, tmp_path, holder="alive", poll_s=0.05) as meter:
            started = time.monotonic()
            assert meter.measure(tiny_model, messages.append).device == devices[0].name
            assert time.monotonic() - started < 10
        assert not any("waiting" in m for m in messages)
        assert not dead.renew(key, 60)  # the dead worker cannot resurrect its lease
    finally:
        dead.engine.dispose()
        cleanup(storage_url, key)


def test_lost_lease_is_never_cleared_by_its_old_holder(tmp_path: Path, sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    old, new = LeasePool(engine, "old"), LeasePool(engine, "new")
    assert old.try_acquire("dev", 60) and not new.try_acquire("dev", 60)
    with engine.begin() as conn:
        conn.execute(update(LEASES).values(expires_at=0.0))
    assert new.try_acquire("dev", 60)
    assert not old.renew("dev", 60)
    old.release("dev")
    assert new.holders(["dev"])["dev"][0] == "new"
    engine.dispose()


def test_wait_for_a_device_is_bounded(tiny_model: Path, tmp_path: Path, sqlite_url: str) -> None:
    devices = devices_for(tmp_path)
    holder = LeasePool(make_engine(sqlite_url), "busy-worker")
    assert holder.try_acquire(devices[0].key, 60)
    with LatencyMeter(devices, sqlite_url, tmp_path, poll_s=0.05, lease_wait_s=0.3) as meter, \
            pytest.raises(MeasurementError, match=r"no device became free within 0.3 s: .*busy-worker"):
        meter.measure(tiny_model)
    holder.engine.dispose()


def test_two_workers_never_time_at_once(tiny_model: Path, tiny_model_b: Path, tmp_path: Path,
                                        storage_url: str) -> None:
    """Both workers time models on one device concurrently; the runs must not overlap."""
    log = tmp_path / "runs.log"
    python = wrapper_python(tmp_path / "py", (
        f'case "$*" in *--model*)\n echo "start $(date +%s.%N)" >> {log}\n "$PY" "$@"\n rc=$?\n'
        f' echo "end $(date +%s.%N)" >> {log}\n exit $rc;;\nesac\nexec "$PY" "$@"'))
    devices = devices_for(tmp_path, python=python)
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            with LatencyMeter(devices, storage_url, tmp_path, holder=name, poll_s=0.02,
                              use_cache=False) as meter:
                for model in (tiny_model, tiny_model_b):
                    meter.measure(model)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    cleanup(storage_url, devices[0].key)
    assert not errors, errors
    events = [line.split()[0] for line in log.read_text().splitlines()]
    assert events == ["start", "end"] * 4, events


def test_heartbeat_keeps_a_short_lease_through_a_long_run(tiny_model: Path, tmp_path: Path,
                                                          sqlite_url: str) -> None:
    """lease_s 1 s, a 2.5 s run: a rival polling all along never gets the device during the run."""
    log = tmp_path / "run.log"
    python = wrapper_python(tmp_path / "py", (
        f'case "$*" in *--model*) date +%s.%N >> {log}; sleep 2.5; date +%s.%N >> {log};; esac\n'
        'exec "$PY" "$@"'))
    devices = devices_for(tmp_path, python=python, lease_s=1)
    key = devices[0].key
    rival = LeasePool(make_engine(sqlite_url), "rival")
    taken: list[float] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            if rival.try_acquire(key, 1):
                taken.append(time.time())
                rival.release(key)
            time.sleep(0.05)

    thread = threading.Thread(target=poll)
    thread.start()
    try:
        with LatencyMeter(devices, sqlite_url, tmp_path, holder="worker", poll_s=0.05) as meter:
            meter.measure(tiny_model)
    finally:
        done.set()
        thread.join(5)
    start, end = (float(t) for t in log.read_text().split())
    assert end - start >= 2.5
    assert not [t for t in taken if start < t < end], "the lease was taken during the run"
    assert rival.try_acquire(key, 1)  # released afterwards
    rival.engine.dispose()
