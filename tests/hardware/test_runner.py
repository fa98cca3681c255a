"""hardware/runner.py on this machine, and the local backend that runs it."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest
from helpers.devices import local_device, wrapper_python, write_profile

from nas.hardware import LatencyMeter, MeasurementError, load_hardware
from nas.hardware.backend import RUNNER_PATH

ENV_FIELDS = {"runtime", "runtime_version", "cpu", "temperature_c", "throttled"}
TIMING_FIELDS = {"median_ms", "p90_ms", "min_ms", "std_ms", "runs", "threads", "input_dtype", "output_dtype"}


def run_runner(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(RUNNER_PATH), *args], capture_output=True,
                          text=True, timeout=60)


def test_runner_is_python39_compatible() -> None:
    """A Pi's Python may be 3.9: the script must parse with 3.9 grammar."""
    ast.parse(RUNNER_PATH.read_text(), feature_version=(3, 9))


def test_runner_times_a_model(tiny_model: Path) -> None:
    done = run_runner("--model", str(tiny_model), "--threads", "2", "--warmup", "1", "--runs", "5")
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.strip().splitlines()  # exactly one JSON object on stdout
    out = json.loads(line)
    assert ENV_FIELDS | TIMING_FIELDS <= set(out)
    assert out["runtime"] == "ai_edge_litert" and out["runtime_version"]
    assert out["runs"] == 5 and out["threads"] == 2
    assert 0 < out["min_ms"] <= out["median_ms"] <= out["p90_ms"]
    assert out["std_ms"] >= 0 and out["cpu"]
    assert out["input_dtype"] == "float32" and out["output_dtype"] == "float32"


def test_runner_keeps_the_fastest_burst(tiny_model: Path) -> None:
    """With --repeats the figures are those of the burst with the lowest median; every burst is reported."""
    done = run_runner("--model", str(tiny_model), "--warmup", "1", "--runs", "7", "--repeats", "4",
                      "--repeat-gap-s", "0.2")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert (out["repeats"], out["repeat_gap_s"], out["runs"]) == (4, 0.2, 7)
    bursts = out["repeat_medians_ms"]
    assert len(bursts) == 4 and all(b > 0 for b in bursts)
    assert out["median_ms"] == pytest.approx(min(bursts), abs=1e-4)
    assert out["min_ms"] <= out["median_ms"] <= out["p90_ms"]

    once = json.loads(run_runner("--model", str(tiny_model), "--runs", "3").stdout)
    assert once["repeats"] == 1 and len(once["repeat_medians_ms"]) == 1
    for bad in (("--repeats", "0"), ("--repeat-gap-s", "-1")):
        refused = run_runner("--model", str(tiny_model), *bad)
        assert refused.returncode == 2 and "--repeats >= 1" in refused.stderr


def test_the_fastest_burst_gives_the_figures() -> None:
    """A burst slowed by something else is set aside: median, p90, min and std all come from the fastest one."""
    import numpy as np

    spec = importlib.util.spec_from_file_location("device_runner", RUNNER_PATH)
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    slow, fast, middle = [3.0, 3.1, 3.2, 9.0], [1.0, 1.4, 1.6, 8.0], [2.0, 2.0, 2.1, 2.2]
    figures = runner.fastest_burst([slow, fast, middle], np)
    assert figures["median_ms"] == pytest.approx(1.5) and figures["min_ms"] == 1.0
    assert figures["p90_ms"] == pytest.approx(np.percentile(fast, 90)) and figures["std_ms"] == pytest.approx(np.std(fast))
    assert figures["repeat_medians_ms"] == [3.15, 1.5, 2.05]


def test_runner_probe_and_errors(tmp_path: Path) -> None:
    probe = run_runner("--probe")
    assert probe.returncode == 0
    assert ENV_FIELDS <= set(json.loads(probe.stdout)) and "median_ms" not in probe.stdout

    missing = run_runner("--model", str(tmp_path / "none.tflite"))
    assert missing.returncode == 2 and "model not found" in missing.stderr

    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a flatbuffer")
    bad = run_runner("--model", str(junk), "--runs", "2")
    assert bad.returncode == 2 and "cannot load" in bad.stderr


def test_local_meter_measures_and_caches(tiny_model: Path, tmp_path: Path, sqlite_url: str) -> None:
    calls = tmp_path / "calls.log"
    python = wrapper_python(tmp_path / "py", f'echo "$*" >> {calls}\nexec "$PY" "$@"')
    devices = load_hardware(write_profile(tmp_path / "hw.yaml", local_device(python=python)))
    messages: list[str] = []
    with LatencyMeter(devices, sqlite_url, tmp_path / "results") as meter:
        res = meter.measure(tiny_model, messages.append)
        again = meter.measure(tiny_model)
    assert not res.cached and again.cached
    assert again.median_ms == res.median_ms and again.measure_start == res.measure_start
    assert res.device == devices[0].name and res.runs == 5 and res.threads == 1
    assert res.repeats == 2 and len(res.repeat_medians_ms) == 2  # the profile's bursts reach the runner
    assert res.median_ms == pytest.approx(min(res.repeat_medians_ms), abs=1e-4)
    assert 0 < res.min_ms <= res.median_ms <= res.p90_ms
    start, end = (datetime.fromisoformat(t) for t in (res.measure_start, res.measure_end))
    assert start.tzinfo is not None and start <= end
    assert json.dumps(res.as_record())  # JSON-safe for Optuna user attrs
    assert sum("--model" in line for line in calls.read_text().splitlines()) == 1
    assert any("timing 5 runs" in m and "best of 2 bursts" in m for m in messages)
    assert (tmp_path / "results" / "hardware" / "measurements.jsonl").is_file()


@contextmanager
def every_core_busy() -> Iterator[None]:
    """Another job on the machine: one spinning process per core."""
    spin = "import time\nend = time.time() + 60\nwhile time.time() < end: pass"
    procs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(0.3)
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_a_figure_timed_beside_other_work_is_retimed_then_flagged_and_not_cached(tiny_model: Path, tmp_path: Path,
                                                                                 sqlite_url: str) -> None:
    profile = local_device(quiet_check_s=0.5, max_other_cpu=0.3, cooldown_s=0.1, cooldown_checks=1)
    devices = load_hardware(write_profile(tmp_path / "hw.yaml", profile))
    messages: list[str] = []
    with LatencyMeter(devices, sqlite_url, tmp_path / "results") as meter:
        with every_core_busy():
            busy = meter.measure(tiny_model, messages.append)
            again = meter.measure(tiny_model)
    assert busy.contended and busy.other_cpu_share is not None and busy.other_cpu_share > 0.5
    assert not again.cached  # a contended figure is never served from the cache
    text = " ".join(messages)
    assert "busy: other processes used" in text and "cooling down 0.1 s" in text and "flagged 'contended'" in text
    assert busy.as_record()["contended"] is True


def test_local_timeout_kills_the_runner(tiny_model: Path, tmp_path: Path, sqlite_url: str) -> None:
    pidfile = tmp_path / "pid"
    python = wrapper_python(tmp_path / "py", f"echo $$ > {pidfile}\nsleep 30")
    devices = load_hardware(write_profile(tmp_path / "hw.yaml", local_device(
        python=python, step_timeout_s=1)))
    started = time.monotonic()
    with LatencyMeter(devices, sqlite_url, tmp_path) as meter, \
            pytest.raises(MeasurementError, match=r"probe timed out after 1 s"):
        meter.measure(tiny_model)
    assert time.monotonic() - started < 10
    pid = int(pidfile.read_text())
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_too_hot_waits_then_fails_and_throttle_is_recorded(tiny_model: Path, tiny_model_b: Path,
                                                           tmp_path: Path, sqlite_url: str) -> None:
    """A fake `vcgencmd` stands in for the Pi firmware: hot first, then cool with "has occurred" bits
    (0x20000: frequency capped since boot), which do not make a figure wrong."""
    fake = tmp_path / "bin"
    fake.mkdir()
    temp_file = tmp_path / "temp"
    temp_file.write_text("90.0")
    vcgencmd = fake / "vcgencmd"
    vcgencmd.write_text(f'#!/bin/sh\ncase "$1" in\n measure_temp) echo "temp=$(cat {temp_file})\'C";;\n'
                        ' get_throttled) echo "throttled=0x20000";;\n *) exit 1;;\nesac\n')
    vcgencmd.chmod(0o755)
    python = wrapper_python(tmp_path / "py", f'PATH={fake}:$PATH exec "$PY" "$@"')
    hot = local_device(python=python, cooldown_s=0.05, cooldown_checks=2, max_temp_c=75)
    devices = load_hardware(write_profile(tmp_path / "hw.yaml", hot))
    messages: list[str] = []
    with LatencyMeter(devices, sqlite_url, tmp_path) as meter:
        with pytest.raises(MeasurementError, match=r"too hot: 90.0 °C > max_temp_c 75 °C"):
            meter.measure(tiny_model, messages.append)
        assert sum("cooling down" in m for m in messages) == 2
        temp_file.write_text("50.0")  # too hot is not "unhealthy": the next trial may use it
        res = meter.measure(tiny_model)
        assert res.throttled == "0x20000" and res.temperature_c == 50.0
        # Runtime known now: no probe, the runner itself refuses to time while too hot.
        temp_file.write_text("80.5")
        messages.clear()
        with pytest.raises(MeasurementError, match=r"too hot: 80.5 °C"):
            meter.measure(tiny_model_b, messages.append)
        assert sum("cooling down" in m for m in messages) == 2
