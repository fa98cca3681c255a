"""The SSH backend against a real OpenSSH server on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path

import psutil
import pytest
from helpers.devices import Sshd, local_device, ssh_device, wrapper_python, write_profile
from rich.console import Console

from nas.hardware import LatencyMeter, MeasurementError, load_hardware
from nas.hardware.backend import DeviceError
from nas.hardware.meter import make_backend, sha256_file


def meter_for(tmp_path: Path, sqlite_url: str, sshd: Sshd, trust: bool = False, **fields: object
              ) -> LatencyMeter:
    devices = load_hardware(write_profile(tmp_path / "hw.yaml", ssh_device(sshd, tmp_path, **fields)))
    return LatencyMeter(devices, sqlite_url, tmp_path / "results", holder="test",
                        trust_new_host_keys=trust)


def test_measure_over_ssh_then_cache_hit(sshd: Sshd, tiny_model: Path, tmp_path: Path,
                                         sqlite_url: str) -> None:
    calls = tmp_path / "calls.log"
    python = wrapper_python(tmp_path / "py", f'echo "$*" >> {calls}\nexec "$PY" "$@"')
    messages: list[str] = []
    with meter_for(tmp_path, sqlite_url, sshd, python=python) as meter:
        res = meter.measure(tiny_model, messages.append)
        name = meter.devices[0].name
        backend = meter._backends[meter.devices[0].key]
        uploads = list(backend.uploads)  # type: ignore[attr-defined]
        again = meter.measure(tiny_model)
        assert backend.uploads == uploads  # type: ignore[attr-defined]
    sha = sha256_file(tiny_model)
    assert res.device == name and not res.cached and res.tflite_sha256 == sha
    assert res.runtime == "ai_edge_litert" and res.runs == 5 and res.threads == 1
    assert 0 < res.min_ms <= res.median_ms <= res.p90_ms and res.std_ms >= 0
    start, end = datetime.fromisoformat(res.measure_start), datetime.fromisoformat(res.measure_end)
    assert start.tzinfo is not None and start <= end
    assert uploads[0].startswith("runner-") and uploads[1] == f"{sha}.tflite"
    remote = tmp_path / "remote dir $x"
    # The model is removed once timed; the runner and the device's runner lock stay.
    assert sorted(p.name for p in remote.iterdir()) == sorted([uploads[0], "runner.lock"])
    assert remote.stat().st_mode & 0o777 == 0o700  # created private: the runner runs from it
    assert again.cached and again.as_record() == {**res.as_record(), "cached": True}
    assert any("uploading model" in m for m in messages)

    # A new worker (fresh meter) probes the device for its runtime version, then hits the cache.
    with meter_for(tmp_path, sqlite_url, sshd, python=python, name=name) as fresh:
        third = fresh.measure(tiny_model)
    assert third.cached and third.median_ms == res.median_ms
    runs = [line for line in calls.read_text().splitlines() if "--model" in line]
    assert len(runs) == 1, runs  # timed once in all


def test_changed_host_key_refused(sshd: Sshd, tiny_model: Path, tmp_path: Path,
                                  sqlite_url: str) -> None:
    known = sshd.known_hosts(tmp_path / "kh_wrong", sshd.other_host_key_line)
    with meter_for(tmp_path, sqlite_url, sshd, known_hosts=str(known), trust=True) as meter, \
            pytest.raises(MeasurementError) as info:
        meter.measure(tiny_model)
    msg = str(info.value)
    assert "has CHANGED" in msg and f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> {known}" in msg
    assert "SHA256:" in msg


def test_unknown_host_refused_unless_opted_in(sshd: Sshd, tiny_model: Path, tmp_path: Path,
                                              sqlite_url: str) -> None:
    known = tmp_path / "kh_empty"
    known.write_text("")
    with meter_for(tmp_path, sqlite_url, sshd, known_hosts=str(known)) as meter, \
            pytest.raises(MeasurementError) as info:
        meter.measure(tiny_model)
    assert "unknown host key" in str(info.value) and "ssh-keyscan -p" in str(info.value)
    assert known.read_text() == ""

    messages: list[str] = []
    with meter_for(tmp_path, sqlite_url, sshd, known_hosts=str(known), trust=True,
                   name="pi-trust") as meter:
        assert not meter.measure(tiny_model, messages.append).cached
    assert known.read_text().split()[:3] == [f"[127.0.0.1]:{sshd.port}", *sshd.host_key_line.split()]
    assert any("trusted new host key" in m for m in messages)

    # Saved: a meter without the opt-in now connects (and finds the figure in the cache).
    with meter_for(tmp_path, sqlite_url, sshd, known_hosts=str(known), name="pi-trust") as meter:
        assert meter.measure(tiny_model).cached


def test_failed_authentication_is_reported(sshd: Sshd, tiny_model: Path, tmp_path: Path,
                                           sqlite_url: str) -> None:
    with meter_for(tmp_path, sqlite_url, sshd, key_file=str(sshd.other_key)) as meter, \
            pytest.raises(MeasurementError) as info:
        meter.measure(tiny_model)
    msg = str(info.value)
    assert "authentication failed" in msg and str(sshd.other_key) in msg
    assert "gave up" not in msg  # an auth failure is not retried


def test_dropped_connection_retried_then_fails(sshd: Sshd, tiny_model: Path, tmp_path: Path,
                                               sqlite_url: str) -> None:
    """The runner sleeps before timing; the test kills the sshd session under it, twice."""
    marker = tmp_path / "timing"
    python = wrapper_python(tmp_path / "py", f'case "$*" in *--model*) echo x >> {marker}; '
                            f'sleep 20;; esac\nexec "$PY" "$@"')
    stop = threading.Event()

    def killer() -> None:
        seen = 0
        while not stop.is_set():
            count = len(marker.read_text().splitlines()) if marker.exists() else 0
            if count > seen:
                seen = count
                time.sleep(0.2)
                sshd.kill_sessions()
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    messages: list[str] = []
    try:
        with meter_for(tmp_path, sqlite_url, sshd, python=python, retries=1) as meter:
            started = time.monotonic()
            with pytest.raises(MeasurementError) as info:
                meter.measure(tiny_model, messages.append)
            assert time.monotonic() - started < 15
            msg = str(info.value)
            assert "connection dropped during timed run" in msg and "gave up after 2 attempts" in msg
            assert any("retrying in 0.1 s" in m for m in messages)
            backend = meter._backends[meter.devices[0].key]
            # The retry found the model already uploaded (same name and size): no second upload.
            assert sum(u.endswith(".tflite") for u in backend.uploads) == 1  # type: ignore[attr-defined]
            assert meter.unhealthy == {meter.devices[0].name: msg.split("no healthy device left: ")[-1]}
            with pytest.raises(MeasurementError, match="no healthy device left"):
                meter.measure(tiny_model)  # skipped at once: the device is marked unhealthy
    finally:
        stop.set()
        thread.join(5)
    assert len(marker.read_text().splitlines()) == 2


def test_remote_step_timeout_kills_the_process(sshd: Sshd, tiny_model: Path, tmp_path: Path,
                                               sqlite_url: str) -> None:
    pidfile = tmp_path / "pid"
    python = wrapper_python(tmp_path / "py", f"echo $$ > {pidfile}\nsleep 30")
    started = time.monotonic()
    with meter_for(tmp_path, sqlite_url, sshd, python=python, step_timeout_s=1) as meter, \
            pytest.raises(MeasurementError, match=r"probe timed out after 1 s \(remote process killed\)"):
        meter.measure(tiny_model)
    assert time.monotonic() - started < 10
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 3
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists()


def test_devices_check_table(sshd: Sshd, tiny_model: Path, tmp_path: Path, sqlite_url: str,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    from nas.hardware import check
    from nas.hardware.pool import LeasePool
    from nas.infra.db import make_engine

    monkeypatch.setattr(check, "reference_model", lambda _results: tiny_model)
    good = ssh_device(sshd, tmp_path, name="pi-good")
    bad = ssh_device(sshd, tmp_path, name="pi-bad", key_file=str(sshd.other_key))
    busy = ssh_device(sshd, tmp_path, name="pi-busy")
    path = write_profile(tmp_path / "pool.yaml", {"devices": [good, bad, busy]})
    worker = LeasePool(make_engine(sqlite_url), "worker-1")
    assert worker.try_acquire("pi-busy", 60)  # a study is timing on it: the check must not
    console = Console(record=True, width=200)
    code = check.check_devices(path, storage_url=sqlite_url, results_dir=tmp_path, console=console)
    text = console.export_text()
    assert code == 1
    assert "pi-good" in text and "ai_edge_litert" in text and "reference model" in text
    assert "burst medians" in text  # the profile's 2 bursts, so a noisy device shows
    assert "authentication failed" in text and "leased by a running worker" in text
    assert "1 of 3 device(s) ready" in text
    assert set(worker.holders(["pi-good", "pi-bad", "pi-busy"])) == {"pi-busy"}  # check released
    worker.engine.dispose()


def test_a_server_without_sftp_gets_the_fix_not_channel_closed(sshd_without_sftp: Sshd, tiny_model: Path,
                                                               tmp_path: Path, sqlite_url: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from nas.hardware import check

    monkeypatch.setattr(check, "reference_model", lambda _results: tiny_model)
    path = write_profile(tmp_path / "pi.yaml", ssh_device(sshd_without_sftp, tmp_path, name="pi-minimal"))
    Path(sqlite_url.removeprefix("sqlite:///")).touch()  # a search's database: devices check leases through it
    console = Console(record=True, width=400)
    code = check.check_devices(path, storage_url=sqlite_url, results_dir=tmp_path, console=console)
    text = " ".join(console.export_text().split())
    assert code == 1
    assert "refused an SFTP session" in text and "Subsystem sftp internal-sftp" in text
    assert "Channel closed" not in text and "gave up" not in text  # a missing subsystem is not retried


def _session_servers(sshd: Sshd) -> list[psutil.Process]:
    """The per-connection sshd processes (not the listener, not the commands they run)."""
    return [child for child in psutil.Process(sshd.pid).children(recursive=True)
            if child.name().startswith("sshd")]


def test_a_device_that_stops_answering_is_blamed_not_the_model(sshd: Sshd, tiny_model: Path,
                                                               tmp_path: Path, sqlite_url: str) -> None:
    """Issue #27 item 5: the sshd serving the connection is SIGSTOPped during the timed run. The
    deadline passes and the kill cannot reach the device: the device is at fault (marked
    unhealthy, said truthfully), and the pool's other device (this machine) times the model."""
    marker = tmp_path / "timing"
    python = wrapper_python(tmp_path / "py", f'case "$*" in *--model*) echo x >> {marker}; '
                            f'sleep 30;; esac\nexec "$PY" "$@"')
    ssh = ssh_device(sshd, tmp_path, python=python, measure_timeout_s=2, step_timeout_s=2,
                     retries=0)
    local = local_device()
    devices = load_hardware(write_profile(tmp_path / "pool.yaml", {"devices": [ssh, local]}))
    stopped: list[psutil.Process] = []

    def stopper() -> None:
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        for proc in _session_servers(sshd):
            proc.suspend()  # SIGSTOP
            stopped.append(proc)

    thread = threading.Thread(target=stopper, daemon=True)
    thread.start()
    messages: list[str] = []
    try:
        with LatencyMeter(devices, sqlite_url, tmp_path / "results", holder="test") as meter:
            started = time.monotonic()
            result = meter.measure(tiny_model, messages.append)
            assert time.monotonic() - started < 20
            why = meter.unhealthy[ssh["name"]]
    finally:
        thread.join(30)
        for proc in stopped:
            try:
                proc.resume()  # SIGCONT
            except psutil.NoSuchProcess:
                pass
        sshd.kill_sessions()
    assert stopped, "no sshd session process was found to stop"
    assert result.device == local["name"] and not result.cached
    assert "did not answer the kill" in why and f"127.0.0.1:{sshd.port}" in why
    assert "the model is not to blame" in why and "remote process killed" not in why
    assert any(f"{ssh['name']} marked unhealthy" in m for m in messages)


def test_an_unanswering_device_error_blames_the_device(sshd: Sshd, tiny_model: Path, tmp_path: Path,
                                                       sqlite_url: str) -> None:
    """The backend's own verdict, without the meter: blame 'device', no retry on the frozen link."""
    marker = tmp_path / "timing"
    python = wrapper_python(tmp_path / "py", f'case "$*" in *--model*) echo x >> {marker}; '
                            f'sleep 30;; esac\nexec "$PY" "$@"')
    devices = load_hardware(write_profile(tmp_path / "hw.yaml", ssh_device(
        sshd, tmp_path, python=python, measure_timeout_s=2, step_timeout_s=2)))
    backend = make_backend(devices[0])
    stopped: list[psutil.Process] = []
    try:
        backend.connect()
        ref = backend.upload(tiny_model, sha256_file(tiny_model))

        def stopper() -> None:
            while not marker.exists():
                time.sleep(0.02)
            for proc in _session_servers(sshd):
                proc.suspend()
                stopped.append(proc)

        thread = threading.Thread(target=stopper, daemon=True)
        thread.start()
        with pytest.raises(DeviceError) as info:
            backend.run(ref)
        thread.join(5)
    finally:
        for proc in stopped:
            try:
                proc.resume()
            except psutil.NoSuchProcess:
                pass
        backend.close()
        sshd.kill_sessions()
    assert stopped
    assert info.value.blame == "device" and not info.value.retry
    assert "timed run timed out after 2 s" in str(info.value)
