"""Issue #29: a device pool that agrees with itself. The judging rule on a SQLite file, then a real pool of
this machine (`kind: local`) and the test sshd on 127.0.0.1 (`kind: ssh`) where the SSH device is slowed on
purpose part-way: it is taken out with the reference figures named, its recent figures are flagged, the trial
is timed on the other device, and it comes back once it agrees again."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import psutil
import pytest
from sqlalchemy import select
from helpers.devices import Sshd, local_device, ssh_device, wrapper_python, write_profile

from nas.hardware import LatencyMeter, load_hardware
from nas.hardware.agreement import OUT, Agreement, FlaggedWindow, ReferenceFigure, judge_figure, read_agreement
from nas.hardware.cache import CACHE, LatencyCache, MeasureSetup
from nas.hardware.health import HealthMarks
from nas.infra.db import make_engine
from nas.trial.record import latency_fingerprint_of, latency_flag_of

# Other test runs on this machine time on its CPU too (the runner's lock is per machine): wait for them.
WAIT_FOR_OTHER_RUNNERS = {"busy_wait_s": 120.0, "busy_poll_s": 0.2}


def at(minute: int) -> str:
    return f"2026-01-01T10:{minute:02d}:00.000+00:00"


def figure(device: str, ms: float, minute: int, setup: str = "s1", verdict: str = "ok") -> ReferenceFigure:
    return ReferenceFigure(device=device, name=f"name-{device}", holder="w", time=at(minute), median_ms=ms,
                           setup=setup, fingerprint={"cpu": "x"}, verdict=verdict)


@pytest.fixture()
def agreement(sqlite_url: str) -> Iterator[Agreement]:
    engine = make_engine(sqlite_url)
    yield Agreement(engine, tolerance=0.10)
    engine.dispose()


# ---- the rule -----------------------------------------------------------------------------------------------

def test_the_tolerance_is_a_share_and_exactly_at_it_still_agrees() -> None:
    assert judge_figure(11.0, 10.0, None, 0, 0.10) is None  # 10 % off: not more than the tolerance
    assert judge_figure(9.0, 10.0, None, 0, 0.10) is None
    assert judge_figure(11.01, 10.0, None, 0, 0.10) is not None  # just over it
    why = judge_figure(11.2, 10.0, None, 0, 0.10)
    assert why == "reference 11.20 ms is 12% off its first figure, 10.00 ms (tolerance 10%)"
    assert "pool's median of 2 other device(s), 10.00 ms" in judge_figure(12.0, None, 10.0, 2, 0.10)
    assert judge_figure(12.0, None, None, 0, 0.10) is None  # nothing to compare with: it agrees


def test_a_figure_is_judged_against_its_own_first_and_the_others_median(agreement: Agreement) -> None:
    agreement.record(figure("a", 10.0, 0))
    assert agreement.judge("a", "s1", 10.9) is None
    assert "its first figure, 10.00 ms" in agreement.judge("a", "s1", 12.0)
    agreement.record(figure("a", 10.5, 1))  # later figures do not move the first one
    assert "its first figure, 10.00 ms" in agreement.judge("a", "s1", 11.2)
    # Another device: no first figure of its own yet, so only the pool's median (a's latest agreeing figure).
    assert agreement.pool_median("b") == (10.5, 1)
    assert agreement.judge("b", "s1", 11.5) is None
    assert "pool's median of 1 other device(s), 10.50 ms" in agreement.judge("b", "s1", 12.0)
    # A figure judged out is no reference for anyone: neither a's first nor the pool's median.
    agreement.record(figure("a", 30.0, 2, verdict=OUT))
    assert agreement.pool_median("b") == (10.5, 1)
    assert agreement.last_ok("a").median_ms == 10.5
    agreement.record(figure("b", 11.0, 3))
    agreement.record(figure("c", 20.0, 4))
    assert agreement.pool_median("d") == (11.0, 3)  # median of 10.5, 11.0, 20.0


def test_a_figure_under_another_setup_starts_afresh(agreement: Agreement) -> None:
    agreement.record(figure("a", 10.0, 0, setup="performance"))
    assert agreement.first("a", "ondemand") is None
    assert agreement.judge("a", "ondemand", 14.0) is None  # not compared with the other governor's figure
    agreement.record(figure("a", 14.0, 1, setup="ondemand"))
    assert agreement.first("a", "ondemand").median_ms == 14.0
    assert "its first figure, 14.00 ms" in agreement.judge("a", "ondemand", 16.0)


def test_a_flagged_window_flags_the_records_inside_it(agreement: Agreement, sqlite_url: str) -> None:
    agreement.record(figure("a", 10.0, 0))
    agreement.flag("a", "name-a", at(0), at(10), "reference 20.00 ms is 100% off")
    figures, windows = read_agreement(agreement.engine)
    assert [f.median_ms for f in figures] == [10.0] and figures[0].fingerprint == {"cpu": "x"}
    assert windows == [FlaggedWindow("a", "name-a", at(0), at(10), "reference 20.00 ms is 100% off")]

    def trial(device: str, start: str) -> optuna.trial.FrozenTrial:
        return optuna.trial.create_trial(value=1.0, user_attrs={"device": device, "latency": {
            "device": device, "measure_start": start, "fingerprint": {"kernel": "6.1"}}})

    assert latency_flag_of(trial("name-a", at(5)), windows) == "reference 20.00 ms is 100% off"
    assert latency_flag_of(trial("name-a", at(11)), windows) is None  # after the window
    assert latency_flag_of(trial("name-b", at(5)), windows) is None  # another device
    assert latency_fingerprint_of(trial("name-a", at(5))) == {"kernel": "6.1"}
    assert latency_fingerprint_of(optuna.trial.create_trial(value=1.0)) == {}


def test_a_database_without_the_tables_reads_as_no_figures(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    assert read_agreement(engine) == ([], [])
    engine.dispose()


def test_the_cache_forgets_a_window_of_one_device(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    cache = LatencyCache(engine)
    setup = MeasureSetup(threads=1, warmup=1, runs=5, runtime_version="2", runner_sha256="r", board="b")
    cache.put("m1", "dev-a", setup, {"median_ms": 1.0, "threads": 1})
    cache.put("m1", "dev-b", setup, {"median_ms": 1.0, "threads": 1})
    assert cache.forget("dev-a", 0.0, time.time() - 3600) == 0  # stored after that window
    assert cache.forget("dev-a", 0.0, time.time() + 1) == 1
    assert cache.get("m1", "dev-a", setup) is None and cache.get("m1", "dev-b", setup) is not None
    engine.dispose()


def test_the_reference_model_is_built_in_a_child_process_once_per_machine(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker has torch loaded: the builder runs TensorFlow in its own process, writes the file into the
    results folder and this machine's cache, and another results folder copies it instead of building."""
    from nas.hardware import reference

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    code = ("import sys; from pathlib import Path; from nas.hardware.reference import reference_model_apart; "
            f"p = reference_model_apart(Path({str(tmp_path / 'one')!r})); "
            "assert 'tensorflow' not in sys.modules; print(p)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    path = tmp_path / "one" / "hardware" / reference.REFERENCE_NAME
    assert done.stdout.strip() == str(path) and path.stat().st_size > 1000
    kept = reference.machine_copy()
    assert kept.is_relative_to(tmp_path / "cache") and kept.read_bytes() == path.read_bytes()
    stamp = path.stat().st_mtime_ns
    monkeypatch.setattr(reference.subprocess, "run", lambda *a, **k: pytest.fail("built again"))
    assert reference.reference_model_apart(tmp_path / "one") == path and path.stat().st_mtime_ns == stamp
    other = reference.reference_model_apart(tmp_path / "two")
    assert other == tmp_path / "two" / "hardware" / reference.REFERENCE_NAME
    assert other.read_bytes() == path.read_bytes()


# ---- a real pool: this machine and the test sshd ---------------------------------------------------------------

@pytest.fixture(scope="module")
def slow_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reference model whose invoke takes milliseconds here, much longer than a scheduler slice: a CPU shared
    with busy processes then shows in its median (a microsecond invoke runs between their slices)."""
    from nas.hardware.reference import build_reference_model

    return build_reference_model(tmp_path_factory.mktemp("ref") / "ref.tflite", 384, 512, 32)


def spinning(hogs: list[subprocess.Popen]) -> None:
    """Return once every hog has used CPU time of its own (it started and spins), not just been started."""
    deadline = time.monotonic() + 30
    procs = [psutil.Process(h.pid) for h in hogs]
    while not all(sum(p.cpu_times()[:2]) > 0.2 for p in procs):
        assert time.monotonic() < deadline, "the CPU hogs never started spinning"
        time.sleep(0.05)


class Clock:
    """The unhealthy marks' clock, moved by the test instead of waited for."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_slowed_device_is_taken_out_flagged_and_comes_back(sshd: Sshd, tiny_model: Path, tiny_model_b: Path,
                                                             slow_reference: Path, tmp_path: Path,
                                                             sqlite_url: str) -> None:
    if subprocess.run(["taskset", "-c", "1", "true"]).returncode != 0:
        pytest.fail("taskset -c 1 must work here: the test pins the slowed device to CPU 1")
    fast = {"warmup": 1, "runs": 7, "repeats": 3, "unhealthy_s": 60}
    ssh = ssh_device(sshd, tmp_path, python=wrapper_python(tmp_path / "py1", 'exec taskset -c 1 "$PY" "$@"'),
                     **fast)
    local = local_device(python=wrapper_python(tmp_path / "py0", 'exec taskset -c 0 "$PY" "$@"'), **fast)
    devices = load_hardware(write_profile(tmp_path / "pool.yaml", {"devices": [ssh, local]}))
    messages: list[str] = []
    hogs: list[subprocess.Popen] = []
    clock = Clock()
    try:
        # 0.75: far above the noise of a machine shared with other work, far below a CPU shared six ways.
        with LatencyMeter(devices, sqlite_url, tmp_path / "results", holder="test", reference_every=1,
                          reference_tolerance=0.75, reference_model=slow_reference, **WAIT_FOR_OTHER_RUNNERS) as meter:
            meter.health = HealthMarks(clock)
            first = meter.measure(tiny_model, messages.append)
            assert first.device == ssh["name"] and not meter.unhealthy  # both devices agreed at the start
            figures, _ = read_agreement(meter.engine)
            assert sorted(f.name for f in figures) == sorted([ssh["name"], local["name"]])
            assert all(f.verdict == "ok" and f.fingerprint["kernel"] for f in figures)
            assert first.kernel and first.as_record()["fingerprint"]["kernel"] == first.kernel

            hogs = [subprocess.Popen(["taskset", "-c", "1", sys.executable, "-c", "while True: pass"])
                    for _ in range(5)]
            spinning(hogs)
            second = meter.measure(tiny_model_b, messages.append)  # the round before it finds the SSH device slow
            assert second.device == local["name"], "\n".join(messages)  # the trial lost nothing: timed on the other device
            why = meter.unhealthy[ssh["name"]]
            assert why.startswith(f"{ssh['name']} taken out of the pool: reference "), why
            assert "off its first figure" in why or "off the pool's median of 1 other device(s)" in why, why
            out_line = next(m for m in messages if m.startswith(f"{ssh['name']} taken out of the pool"))
            assert "UTC flagged (1 cached figure(s) to time again)" in out_line, out_line
            figures, windows = read_agreement(meter.engine)
            judged = [f for f in figures if f.name == ssh["name"]]
            assert [f.verdict for f in judged] == ["ok", "out"] and judged[1].median_ms > judged[0].median_ms
            assert len(windows) == 1 and windows[0].name == ssh["name"]
            assert windows[0].covers(first.device, first.measure_start)  # the first trial's figure is suspect
            with meter.engine.connect() as conn:
                assert conn.execute(select(CACHE).where(CACHE.c.device == devices[0].key)).first() is None

            for hog in hogs:
                hog.kill()
                hog.wait()
            hogs = []
            clock.now += 61  # the mark runs out: the device is probed and checked again
            messages.clear()
            third = meter.measure(tiny_model, messages.append)
            assert f"{ssh['name']}: unhealthy mark expired, probing it again" in messages
            assert any(m.startswith(f"{ssh['name']} is back in the pool: reference ") for m in messages), messages
            assert third.device == ssh["name"] and not third.cached  # its flagged figure was dropped: timed again
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def test_the_pool_is_checked_at_the_start_and_every_k_measurements(tiny_model: Path, tiny_model_b: Path,
                                                                   tmp_path: Path, sqlite_url: str) -> None:
    devices = load_hardware(write_profile(tmp_path / "pool.yaml", {"devices": [local_device(), local_device()]}))
    with LatencyMeter(devices, sqlite_url, tmp_path / "results", reference_every=3,
                      reference_model=tiny_model_b, **WAIT_FOR_OTHER_RUNNERS) as meter:
        meter.agreement.tolerance = 1e9  # this test counts the checks: a microsecond figure's noise is no verdict
        for _ in range(7):  # the first measurement times, the six after it are cache hits
            meter.measure(tiny_model)
        figures, _ = read_agreement(meter.engine)
    # At call 1 (first contact), call 4 and call 7: each device times the reference model, never served cached.
    assert sorted((f.name, f.verdict) for f in figures) == sorted([(d.name, "ok") for d in devices] * 3)
    with LatencyMeter(devices, f"sqlite:///{tmp_path / 'off.db'}", tmp_path / "results") as meter:
        meter.measure(tiny_model)  # reference_every 0 (the meter's default): no checks, no tables
        assert meter.agreement is None and read_agreement(meter.engine) == ([], [])


def test_the_pools_only_usable_device_is_flagged_not_taken_out(tiny_model: Path, tiny_model_b: Path,
                                                               tmp_path: Path, sqlite_url: str) -> None:
    """Taking out the last usable device would stop the search: it stays in use, its window is flagged, and it is
    checked again at the next measurement until it agrees."""
    (device,) = load_hardware(write_profile(tmp_path / "one.yaml", local_device()))
    messages: list[str] = []
    with LatencyMeter([device], sqlite_url, tmp_path / "results", reference_every=5,
                      reference_model=tiny_model_b, **WAIT_FOR_OTHER_RUNNERS) as meter:
        meter.measure(tiny_model, messages.append)  # first contact: its first figure, nothing to judge against
        meter.agreement.tolerance = 1e-12  # from now on any figure differs from the first by more than this
        meter._agreed.clear()  # a round is due
        result = meter.measure(tiny_model_b, messages.append)
        assert result.device == device.name and meter.unhealthy == {}  # timed on it: nothing lost
        line = next(m for m in messages if m.startswith(f"{device.name} disagrees: reference "))
        assert "UTC flagged" in line and "it is the pool's only usable device, so it stays in use" in line, line
        figures, windows = read_agreement(meter.engine)
        assert [f.verdict for f in figures] == ["ok", "out"] and len(windows) == 1
        checks = len(figures)
        meter.measure(tiny_model_b, messages.append)  # a cache hit, but the device is checked again first
        assert len(read_agreement(meter.engine)[0]) == checks + 1
