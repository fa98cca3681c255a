"""Issue #29: the figure a user will see on the device.

The CPU governor and clock recorded with every figure (and in the cache key), thread counts timed as a
curve, and `nas devices check` saying when the governor lets the clock wander. A fake sysfs folder stands
in for a Pi's cpufreq files (the runner reads them under --sysfs-root or $NAS_RUNNER_SYSFS_ROOT).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers.devices import local_device, wrapper_python, write_profile
from rich.console import Console

from nas.errors import ConfigError
from nas.hardware import LatencyMeter, load_hardware
from nas.hardware.backend import RUNNER_PATH, runner_args
from nas.hardware.cache import MeasureSetup

CPUFREQ = Path("devices/system/cpu/cpu0/cpufreq")


def fake_sysfs(root: Path, governor: str | None = "ondemand", cur_khz: int = 600000,
               max_khz: int = 1800000) -> Path:
    """A sysfs folder with cpu0's cpufreq files (governor None: no cpufreq at all, as in a container)."""
    folder = root / CPUFREQ
    folder.mkdir(parents=True, exist_ok=True)
    if governor is None:
        for name in ("scaling_governor", "scaling_cur_freq", "cpuinfo_max_freq"):
            (folder / name).unlink(missing_ok=True)
        return root
    (folder / "scaling_governor").write_text(governor + "\n")
    (folder / "scaling_cur_freq").write_text(f"{cur_khz}\n")
    (folder / "cpuinfo_max_freq").write_text(f"{max_khz}\n")
    return root


def run_runner(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(RUNNER_PATH), *args], capture_output=True, text=True,
                          timeout=60, env=env)


def meter_for(tmp_path: Path, url: str, data: dict[str, Any]) -> LatencyMeter:
    devices = load_hardware(write_profile(tmp_path / f"hw-{data['name']}.yaml", data))
    return LatencyMeter(devices, url, tmp_path / "results", holder="worker", poll_s=0.05)


# ---- 1. the CPU governor and clock ---------------------------------------------------------------

def test_runner_reports_governor_and_clock(tiny_model: Path, tmp_path: Path) -> None:
    root = fake_sysfs(tmp_path / "sys", "ondemand", 600000, 1800000)
    probe = json.loads(run_runner("--probe", "--sysfs-root", str(root)).stdout)
    assert (probe["cpu_governor"], probe["cpu_cur_freq_khz"], probe["cpu_max_freq_khz"]) == \
        ("ondemand", 600000, 1800000)

    import os
    env = {**os.environ, "NAS_RUNNER_SYSFS_ROOT": str(root)}  # what a local device's runner inherits
    done = run_runner("--model", str(tiny_model), "--runs", "3", "--warmup", "0", env=env)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["cpu_governor"] == "ondemand" and out["cpu_max_freq_khz"] == 1800000
    assert out["cpu_cur_freq_before_khz"] == 600000 and out["cpu_cur_freq_khz"] == 600000


def test_missing_cpufreq_files_are_unknown_not_an_error(tiny_model: Path, tmp_path: Path) -> None:
    root = fake_sysfs(tmp_path / "sys", None)
    for args in (("--probe",), ("--model", str(tiny_model), "--runs", "2", "--warmup", "0")):
        done = run_runner(*args, "--sysfs-root", str(root))
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        assert out["cpu_governor"] == "unknown"
        assert out["cpu_cur_freq_khz"] is None and out["cpu_max_freq_khz"] is None
    (root / CPUFREQ / "scaling_cur_freq").write_text("garbage\n")  # unreadable numbers too
    out = json.loads(run_runner("--probe", "--sysfs-root", str(root)).stdout)
    assert out["cpu_cur_freq_khz"] is None


def test_figures_under_another_governor_are_timed_again(tiny_model: Path, tmp_path: Path, sqlite_url: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    root = fake_sysfs(tmp_path / "sys", "ondemand")
    monkeypatch.setenv("NAS_RUNNER_SYSFS_ROOT", str(root))
    calls = tmp_path / "calls.log"
    data = local_device(python=wrapper_python(tmp_path / "py", f'echo "$*" >> {calls}\nexec "$PY" "$@"'))

    def measure() -> Any:
        with meter_for(tmp_path, sqlite_url, data) as meter:
            return meter.measure(tiny_model)

    first = measure()
    assert not first.cached and first.cpu_governor == "ondemand" and first.cpu_max_freq_khz == 1800000
    assert measure().cached  # same governor: the stored figure
    fake_sysfs(root, "performance", 1800000)
    other = measure()
    assert not other.cached and other.cpu_governor == "performance"
    fake_sysfs(root, "ondemand")
    back = measure()
    assert back.cached and back.cpu_governor == "ondemand" and back.median_ms == first.median_ms
    assert sum("--model" in line for line in calls.read_text().splitlines()) == 2
    base = MeasureSetup(1, 1, 5, "2.0", "a" * 64, "board", governor="ondemand")
    assert base.digest() != MeasureSetup(1, 1, 5, "2.0", "a" * 64, "board", governor="performance").digest()


def test_devices_check_warns_about_the_governor(tiny_model: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from nas.hardware import check

    monkeypatch.setattr(check, "reference_model", lambda _results: tiny_model)
    root = fake_sysfs(tmp_path / "sys", "ondemand", 600000, 1500000)
    monkeypatch.setenv("NAS_RUNNER_SYSFS_ROOT", str(root))
    path = write_profile(tmp_path / "hw.yaml", local_device(name="box"))

    def check_text() -> tuple[int, str]:
        console = Console(record=True, width=400)
        code = check.check_devices(path, results_dir=tmp_path, console=console)
        cells = (cell.strip() for cell in console.export_text().replace("│", "|").split("|"))
        return code, " | ".join(cell for cell in cells if cell)

    code, text = check_text()
    assert code == 0  # a warning, not a failure: the device can time
    assert "CPU governor | warn | ondemand (600 of 1500 MHz)" in text and "set `performance`" in text
    fake_sysfs(root, "performance", 1500000, 1500000)
    code, text = check_text()
    assert code == 0 and "CPU governor | ok | performance (1500 of 1500 MHz)" in text


# ---- 2. threads as a list ------------------------------------------------------------------------

def test_profile_threads_list(tmp_path: Path) -> None:
    (dev,) = load_hardware(write_profile(tmp_path / "hw.yaml", local_device(threads=[1, 2, 4], threads_fixed=2)))
    assert dev.thread_counts == (1, 2, 4) and dev.threads_fixed == 2
    args = runner_args(dev, "m.tflite")
    assert args[args.index("--threads") + 1] == "1,2,4" and args[args.index("--threads-fixed") + 1] == "2"
    (one,) = load_hardware(write_profile(tmp_path / "one.yaml", local_device(threads=3)))
    assert one.thread_counts == (3,) and "--threads-fixed" not in runner_args(one, "m.tflite")


@pytest.mark.parametrize(("threads", "fixed", "expected"), [
    ([1, 0, 2], None, "threads: thread counts must be 1 to 256, got 0"),
    ([-2], None, "threads: thread counts must be 1 to 256, got -2"),
    ([2, 1, 2], None, "threads: thread counts must be distinct, got [2, 1, 2]"),
    ([], None, "threads: must be a thread count or a non-empty list"),
    (["two"], None, "threads: must be a thread count or a non-empty list"),
    ([1, 2], 4, "threads_fixed 4 is not one of threads [1, 2]"),
])
def test_bad_thread_lists_are_one_line_naming_the_file(tmp_path: Path, threads: Any, fixed: int | None,
                                                       expected: str) -> None:
    data = local_device(threads=threads, **({"threads_fixed": fixed} if fixed else {}))
    path = write_profile(tmp_path / "hw.yaml", data)
    with pytest.raises(ConfigError) as info:
        load_hardware(path)
    message = str(info.value)
    assert str(path) in message and expected in message and "\n" not in message


def test_runner_times_every_count_and_keeps_the_fastest(tiny_model: Path) -> None:
    done = run_runner("--model", str(tiny_model), "--threads", "1,2", "--runs", "5", "--warmup", "1",
                      "--repeats", "2")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    curve = {int(k): v for k, v in out["threads_curve"].items()}
    assert set(curve) == {1, 2} and all(ms > 0 for ms in curve.values())
    assert out["threads"] == min(curve, key=curve.get)
    assert out["median_ms"] == pytest.approx(curve[out["threads"]], abs=1e-5)
    fixed = json.loads(run_runner("--model", str(tiny_model), "--threads", "1,2", "--threads-fixed", "2",
                                  "--runs", "3", "--warmup", "0").stdout)
    assert fixed["threads"] == 2 and fixed["threads_fixed"] == 2
    assert fixed["median_ms"] == pytest.approx(fixed["threads_curve"]["2"], abs=1e-5)
    for bad in (("--threads", "0,1"), ("--threads", "2,2"), ("--threads", "1,2", "--threads-fixed", "3")):
        assert run_runner("--model", str(tiny_model), *bad).returncode == 2


def test_a_measurement_with_a_thread_list_records_the_curve(tiny_model: Path, tmp_path: Path,
                                                            sqlite_url: str) -> None:
    messages: list[str] = []
    with meter_for(tmp_path, sqlite_url, local_device(threads=[1, 2])) as meter:
        res = meter.measure(tiny_model, messages.append)
        again = meter.measure(tiny_model)
    assert set(res.threads_curve) == {1, 2}
    assert res.threads == min(res.threads_curve, key=res.threads_curve.get)
    assert res.median_ms == pytest.approx(min(res.threads_curve.values()), abs=1e-5)
    assert again.cached and again.threads_curve == res.threads_curve  # int keys back from the JSON cache
    assert json.dumps(res.as_record())
    assert any("1/2 threads" in m for m in messages)


# ---- 4. sustained load ---------------------------------------------------------------------------

def test_devices_check_sustained_load(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nas.hardware import check

    monkeypatch.setattr(check, "reference_model", lambda _results: tiny_model)
    root = fake_sysfs(tmp_path / "sys", "performance", 1500000, 1500000)
    (root / "class/thermal/thermal_zone0").mkdir(parents=True)
    (root / "class/thermal/thermal_zone0/temp").write_text("48500\n")
    monkeypatch.setenv("NAS_RUNNER_SYSFS_ROOT", str(root))
    path = write_profile(tmp_path / "hw.yaml", local_device(name="box"))
    console = Console(record=True, width=400)
    code = check.check_devices(path, results_dir=tmp_path, console=console, sustained_s=3)
    text = " ".join(console.export_text().split())
    assert code == 0 and "sustained load" in text
    assert "3 s," in text and "median first" in text and "stretches of 0.3 s" in text
    assert "48.5 -> 48.5 °C" in text

    done = subprocess.run([sys.executable, str(RUNNER_PATH), "--model", str(tiny_model), "--runs", "2",
                           "--sustained-s", "1", "--sysfs-root", str(root)], capture_output=True, text=True,
                          timeout=60)
    run = json.loads(done.stdout)["sustained"]
    assert run["invokes"] > 10 and run["first_median_ms"] > 0 and run["last_median_ms"] > 0
    assert run["throttled_end"] is None
    # Each sample: [seconds, °C, kHz, median ms of the invokes since the sample before]; the first is taken
    # before any invoke, the last when the load ends.
    samples = run["samples"]
    assert samples[0][1:] == [48.5, 1500000, None] and len(samples) >= 2
    assert all(len(sample) == 4 and sample[1:3] == [48.5, 1500000] for sample in samples)
    assert all(sample[3] > 0 for sample in samples[1:])
    assert [sample[0] for sample in samples] == sorted(sample[0] for sample in samples)
    assert samples[-1][0] >= 0.9  # the closing sample, at the end of the 1 s load


def test_a_sustained_measurement_is_timed_afresh_and_carries_the_load(tiny_model: Path, tmp_path: Path,
                                                                      sqlite_url: str) -> None:
    messages: list[str] = []
    with meter_for(tmp_path, sqlite_url, local_device()) as meter:
        burst = meter.measure(tiny_model)
        assert burst.sustained is None and meter.measure(tiny_model).cached
        loaded = meter.measure(tiny_model, messages.append, sustained_s=1)
        cached = meter.measure(tiny_model)
    assert not loaded.cached and loaded.sustained is not None  # never served the cached burst figure
    assert loaded.sustained["seconds"] == 1 and loaded.sustained["invokes"] > 10
    assert loaded.sustained["first_median_ms"] > 0 and len(loaded.sustained["samples"][0]) == 4
    assert any("then 1 s under sustained load" in m for m in messages)
    # The cache keeps burst figures only: a later plain request is served without the sustained load.
    assert cached.cached and cached.sustained is None
    assert json.dumps(loaded.as_record())


def test_the_default_sustained_load_is_a_minute_on_a_device_and_ten_seconds_here(tmp_path: Path) -> None:
    from nas.hardware.profile import default_sustained_s

    (here,) = load_hardware(write_profile(tmp_path / "local.yaml", local_device()))
    (pi,) = load_hardware(write_profile(tmp_path / "pi.yaml", {"name": "pi", "kind": "ssh", "host": "pi.lan"}))
    assert (default_sustained_s(here), default_sustained_s(pi)) == (10.0, 60.0)


def test_every_two_bursts_are_a_gap_apart_counts_included(monkeypatch: pytest.MonkeyPatch) -> None:
    """A multi-thread interpreter's worker threads spin on after its burst: the next count's burst waits the gap,
    and the rounds go round the counts (count 1, count 2, count 1, ...)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("device_runner", RUNNER_PATH)
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    events: list[str] = []

    class Interpreter:
        def __init__(self, name: str) -> None:
            self.name = name

        def invoke(self) -> None:
            if not events or events[-1] != self.name:
                events.append(self.name)

    monkeypatch.setattr(runner.time, "sleep", lambda seconds: events.append(f"sleep {seconds:g}"))
    bursts = runner.time_rounds([Interpreter("1 thread"), Interpreter("2 threads")], warmup=1, runs=2, repeats=2,
                                gap_s=0.5)
    assert events == ["1 thread", "sleep 0.5", "2 threads", "sleep 0.5", "1 thread", "sleep 0.5", "2 threads"]
    assert [len(b) for b in bursts] == [2, 2] and all(len(times) == 2 for b in bursts for times in b)
