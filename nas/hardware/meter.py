"""`LatencyMeter`: the one front door the search calls to get a model's on-device latency.

One `measure()` = cache lookup, lease a healthy device, probe it (runtime present, cool enough),
upload the model, time it with the runner, check the lease is still held and the board was not
throttled, store the figures, release the device. Failures come out as `MeasurementError` with a
reason a trial can record; the study goes on. The meter talks to devices only through the backend
contract (`backend.py`), whatever their kind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from nas.errors import NasRuntimeError
from nas.infra.files import sha256_file
from nas.hardware.agreement import OK, OUT, Agreement, ReferenceFigure, epoch_of
from nas.hardware.backend import (Backend, BackendOptions, DeviceBusy, DeviceError, LeaseLost, MeasurementError,
                                  create_backend)
from nas.hardware.cache import LatencyCache, MeasureSetup
from nas.hardware.health import HealthMarks
from nas.hardware.pool import LeaseHeartbeat, LeasePool
from nas.infra.db import make_engine
from nas.hardware.profile import DeviceProfile
from nas.hardware.reference import reference_model_apart
from nas.hardware.throttle import throttled_now

Progress = Callable[[str], None]


@dataclass
class LatencyResult:
    """One latency measurement of one `.tflite` file on one device (or its cached copy)."""

    device: str
    threads: int
    runtime: str
    runtime_version: str | None
    median_ms: float
    p90_ms: float
    min_ms: float
    std_ms: float
    runs: int
    cpu: str | None
    temperature_c: float | None
    throttled: str | None
    measure_start: str  # ISO 8601, UTC offset included
    measure_end: str
    tflite_sha256: str
    cached: bool = False
    # The model's I/O tensor dtypes as the runner saw them ("float32", "int8"): which precision was
    # timed. None in records taken before the runner reported them.
    input_dtype: str | None = None
    output_dtype: str | None = None
    # The rest of the measurement setup (cache key): untimed invokes, and the board behind the
    # device name (SSH host key fingerprint, or the CPU model). None in older records.
    warmup: int | None = None
    board: str | None = None
    # Share of all cores other processes used just before the timed runs (None: not checked), and
    # whether it stayed above `max_other_cpu` through every wait: such a figure is kept, never cached.
    other_cpu_share: float | None = None
    contended: bool = False
    # Bursts timed (the figures above are the burst with the lowest median) and every burst's median;
    # None in records taken before the runner timed in bursts.
    repeats: int | None = None
    repeat_medians_ms: list[float] | None = None
    # Median ms per thread count timed ({1: 9.8, 2: 5.6}); `threads` is the count the figures above
    # are of: the fastest, or the profile's `threads_fixed`. None in older records.
    threads_curve: dict[int, float] | None = None
    # cpu0's frequency governor ("unknown" without cpufreq) and its clock in kHz before and after the
    # timed runs, and its maximum. The governor is part of the cache key. None in older records.
    cpu_governor: str | None = None
    cpu_cur_freq_khz: int | None = None
    cpu_cur_freq_before_khz: int | None = None
    cpu_max_freq_khz: int | None = None
    # The device's kernel release (`uname -r`); None in records taken before the runner reported it.
    kernel: str | None = None
    # The runner's `sustained` object when the run also invoked the model without pause for a while
    # (`measure(sustained_s=...)`): latency and temperature over time. Never cached; None otherwise.
    sustained: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.threads_curve is not None:  # JSON (the cache, Optuna attrs) gives string keys back
            self.threads_curve = {int(k): float(v) for k, v in self.threads_curve.items()}

    def fingerprint(self) -> dict[str, Any]:
        """What the device was when it gave this figure: CPU, kernel, runtime and its version, governor and
        temperature. Figures of devices with different fingerprints are compared knowing it."""
        return {"cpu": self.cpu, "kernel": self.kernel, "runtime": self.runtime,
                "runtime_version": self.runtime_version, "cpu_governor": self.cpu_governor,
                "temperature_c": self.temperature_c}

    def as_record(self) -> dict[str, Any]:
        """JSON-safe dict, ready for Optuna user attrs; carries the device's `fingerprint`."""
        return {**dataclasses.asdict(self), "fingerprint": self.fingerprint()}

    @classmethod
    def from_record(cls, record: dict[str, Any], cached: bool) -> LatencyResult:
        """Rebuild from a stored record, ignoring keys a newer version may have added."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in record.items() if k in names}
        values["cached"] = cached
        return cls(**values)


class ContendedRun(DeviceError):
    """Other processes kept the device's CPU busy around a timed run: the figure is too slow."""

    def __init__(self, dev: DeviceProfile, out: dict[str, Any]):
        super().__init__(f"{dev.name}: busy: other processes used {out['other_cpu_share']:.0%} of the CPU "
                         f"(max_other_cpu {dev.max_other_cpu:.0%}), figure discarded", blame="transient",
                         cooldown=True)
        self.out = out


def now_iso() -> str:
    """Current time as ISO 8601 with a time zone (UTC), millisecond resolution."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def make_backend(profile: DeviceProfile, trust_new_host_keys: bool = False,
                 notify: Progress | None = None) -> Backend:
    """The backend for a profile's kind (see `backend.create_backend`)."""
    return create_backend(profile, BackendOptions(trust_new_host_keys, notify))


def default_holder() -> str:
    """A lease holder name unique to this meter: host, process, and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class LatencyMeter:
    """Measures `.tflite` latency on a pool of devices, with leases, a cache and health tracking.

    One meter per worker. `measure()` calls are serialised by a lock, so a meter shared by threads
    stays correct (it is one lease holder). Keyword-only extras: `lease_wait_s` bounds the wait for
    a free device, `poll_s` is the lease polling period, `use_cache=False` forces a fresh timing
    (benchmarks); the figures are still stored. `busy_wait_s` > 0: a device whose runner lock another
    process holds (it times on the device, outside the lease pool) is waited for that long, tried every
    `busy_poll_s` (each try starts a runner, which loads its runtime: seldom, not to slow the one timing),
    before it counts as failing; 0 (a search) retries it `retries` times and moves on.

    `reference_every` > 0 keeps the pool in agreement (`nas.hardware.agreement`): at first contact with a
    device (again after an unhealthy mark ran out) and every `reference_every` calls of `measure()`, each
    healthy device times the reference model (`reference_model`, default: built once under results/hardware/
    in a child process); one off by more than `reference_tolerance` is taken out for its `unhealthy_s`, its
    figures since its last agreeing check are flagged and dropped from the cache, and it must agree again to
    come back. 0 (the default here; `nas run` passes its settings) checks nothing.
    """

    def __init__(self, devices: Sequence[DeviceProfile], storage_url: str, results_dir: Path,
                 holder: str | None = None, trust_new_host_keys: bool = False, *,
                 lease_wait_s: float = 1800.0, poll_s: float = 2.0, use_cache: bool = True,
                 busy_wait_s: float = 0.0, busy_poll_s: float = 10.0, reference_every: int = 0,
                 reference_tolerance: float = 0.10, reference_model: Path | None = None):
        if not devices:
            raise ValueError("LatencyMeter needs at least one device")
        self.devices = list(devices)
        self.results_dir = Path(results_dir)
        self.holder = holder or default_holder()
        self.trust_new_host_keys = trust_new_host_keys
        self.lease_wait_s = lease_wait_s
        self.poll_s = poll_s
        self.use_cache = use_cache
        self.busy_wait_s = busy_wait_s
        self.busy_poll_s = busy_poll_s
        self._busy_since: float | None = None  # while waiting for another runner: when the wait started
        self.engine = make_engine(storage_url)
        self.pool = LeasePool(self.engine, self.holder)
        self.cache = LatencyCache(self.engine)
        self.step_seconds: dict[str, float] = {}  # last measure(), by step (benchmarks read it)
        self.health = HealthMarks()  # devices out of use for a while, with the reason
        self._backends: dict[str, Backend] = {}
        self._setups: dict[str, MeasureSetup] = {}  # measurement setup seen per device key
        self._lock = threading.Lock()
        self._beat: LeaseHeartbeat | None = None  # keeps the current lease alive
        self.reference_every = reference_every
        self.agreement = Agreement(self.engine, reference_tolerance) if reference_every > 0 else None
        self._reference_path = Path(reference_model) if reference_model is not None else None
        self._calls = 0  # measure() calls, for the agreement checks
        self._agreed: set[str] = set()  # devices whose reference figure agreed since the last round was due
        # Devices out for disagreeing, with the reason: used again only once a reference figure agrees.
        self._taken_out: dict[str, str] = {}
        self._sustained_s = 0.0  # the sustained load the measure() under way asks for (0: none)

    # ---- public -----------------------------------------------------------------------------

    @property
    def unhealthy(self) -> dict[str, str]:
        """Devices this meter does not use now, with the reason (device name -> reason)."""
        names = {d.key: d.name for d in self.devices}
        return {names[k]: why for k, why in self.health.active().items()}

    def unusable_reason(self) -> str | None:
        """Why no device of the pool can be used now, or None when one may be (cheap: no I/O).

        A trial asks this before training, so an outage fails the trial at once instead of after
        minutes of training and export. Devices never contacted yet, and devices whose unhealthy
        mark has expired (they are probed again), count as usable.
        """
        with self._lock:
            self._expire_marks(lambda _msg: None)
            marks = self.health.active()
            if any(d.key not in marks for d in self.devices):
                return None
            return "no usable device: " + "; ".join(
                f"{marks[d.key]} (probed again in {self.health.seconds_left(d.key):.0f} s)"
                for d in self.devices)

    def check_usable(self) -> None:
        """Raise MeasurementError with the reason when no device can be used now."""
        reason = self.unusable_reason()
        if reason is not None:
            raise MeasurementError(reason)

    def measure(self, tflite_path: Path, progress: Progress | None = None, key: str | None = None, *,
                sustained_s: float = 0.0) -> LatencyResult:
        """Latency of one `.tflite` on a healthy device of the pool (cached figures if any).

        `key` names what determines the latency when it is more than these bytes: a graph key
        (architecture, precision, resolution, converter) lets every trained copy of one graph share
        one measurement. Without it the file's sha256 is the key. `sustained_s` > 0: after the timed
        bursts the runner invokes the model without pause that long (`LatencyResult.sustained`); such a
        request is always timed afresh, never served from the cache (its burst figures are still stored).
        """
        note: Progress = progress or (lambda _msg: None)
        path = Path(tflite_path)
        if not path.is_file():
            raise MeasurementError(f"model file not found: {path}")
        with self._lock:
            started = time.perf_counter()
            self._sustained_s = max(0.0, float(sustained_s))
            self.step_seconds = {}
            for backend in self._backends.values():
                backend.step_seconds = {}
            try:
                try:
                    return self._measure(path, key or sha256_file(path), note)
                except SQLAlchemyError as exc:
                    # The study database holds leases and the cache; never echo its URL (password).
                    raise MeasurementError(f"lease/cache database error: {type(exc).__name__}: "
                                           f"{getattr(exc, 'orig', None) or exc}") from exc
            except MeasurementError as exc:
                self._log({"event": "failed", "model": str(path), "reason": str(exc),
                           "time": now_iso()})
                raise
            finally:
                self._sustained_s = 0.0
                for backend in self._backends.values():
                    for step, secs in backend.step_seconds.items():
                        self.step_seconds[step] = self.step_seconds.get(step, 0.0) + secs
                self.step_seconds["total"] = time.perf_counter() - started

    def cached(self, key: str) -> LatencyResult | None:
        """A stored figure for `key` on a device this process has already probed, without leasing."""
        with self._lock:
            try:
                return self._known_hit(key)
            except SQLAlchemyError:
                return None

    def close(self) -> None:
        """Close device connections and database connections."""
        for backend in self._backends.values():
            backend.close()
        self._backends.clear()
        self.engine.dispose()

    def __enter__(self) -> LatencyMeter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- steps ------------------------------------------------------------------------------

    def _measure(self, path: Path, sha: str, note: Progress) -> LatencyResult:
        if self.agreement is not None:
            self._calls += 1
            if self._calls > 1 and (self._calls - 1) % self.reference_every == 0:
                self._agreed.clear()  # a round is due: every device times the reference model again
            self._expire_marks(note)
            self._check_agreement(note)
        if self.use_cache and not self._sustained_s:
            hit = self._known_hit(sha)
            if hit is not None:
                note(f"{hit.device}: cached latency {hit.median_ms:.2f} ms")
                return hit
        skipped: dict[str, str] = {}  # devices given up on for this measurement only
        lost: dict[str, int] = {}  # leases lost during this measurement, per device
        while True:
            self._expire_marks(note)
            healthy = [d for d in self.devices if self.health.reason(d.key) is None and d.key not in skipped
                       and d.key not in self._taken_out]
            if not healthy:
                marks = self.health.active()
                reasons = list(marks.values())
                reasons += [why for k, why in {**self._taken_out, **skipped}.items() if k not in marks]
                raise MeasurementError("no healthy device left: " + "; ".join(reasons))
            if self.use_cache:
                # Devices that already timed this file first: a cache hit costs no device time.
                have = self.cache.devices_with(
                    sha, {d.key: self._setups[d.key] for d in healthy if d.key in self._setups})
                healthy.sort(key=lambda d: d.key not in have)
            lease_started = time.perf_counter()
            dev = self.pool.acquire(healthy, self.lease_wait_s, self.poll_s, note)
            self.step_seconds["lease_wait"] = (self.step_seconds.get("lease_wait", 0.0)
                                               + time.perf_counter() - lease_started)
            try:
                with LeaseHeartbeat(self.pool, dev.key, dev.lease_s) as beat:
                    self._beat = beat
                    return self._with_retries(dev, path, sha, note)
            except LeaseLost as exc:
                lost[dev.key] = lost.get(dev.key, 0) + 1
                if lost[dev.key] <= dev.retries:
                    note(f"{exc}; leasing it again to time again")
                    continue
                skipped[dev.key] = f"{exc} ({lost[dev.key]} times)"
            except DeviceError as exc:
                if exc.blame == "model":
                    raise
                if exc.blame == "device":
                    self.health.mark(dev.key, str(exc), dev.unhealthy_s)
                    self._setups.pop(dev.key, None)
                    self._agreed.discard(dev.key)
                    note(f"{dev.name} marked unhealthy for {dev.unhealthy_s:g} s: {exc}")
                else:
                    note(f"{dev.name} skipped for this model: {exc}")
                skipped[dev.key] = str(exc)
            finally:
                self._beat = None
                try:
                    self.pool.release(dev.key)
                except Exception as exc:  # the lease expires anyway; never mask the real outcome
                    note(f"{dev.name}: could not release lease ({exc}); it will expire")

    def _expire_marks(self, note: Progress) -> None:
        """Devices whose unhealthy mark ran out are used again, after a fresh probe."""
        names = {d.key: d.name for d in self.devices}
        for key in self.health.expire():
            self._setups.pop(key, None)
            self._agreed.discard(key)  # probed again, and timed on the reference model before it is used
            backend = self._backends.get(key)
            if backend is not None:
                backend.close()
            note(f"{names.get(key, key)}: unhealthy mark expired, probing it again")

    def _reference(self) -> Path:
        """The reference model's file, built (once, in a child process) on first need."""
        if self._reference_path is None:
            try:
                self._reference_path = reference_model_apart(self.results_dir)
            except NasRuntimeError as exc:
                raise MeasurementError(str(exc)) from None
        return self._reference_path

    def _check_agreement(self, note: Progress) -> None:
        """Each healthy device not checked since the round was due times the reference model, leased in turn,
        and is judged. A device that cannot be checked now (busy, a transient failure) is checked at the next
        measurement; one that fails for good is marked unhealthy as a measurement would mark it."""
        for dev in self.devices:
            if dev.key in self._agreed or self.health.reason(dev.key) is not None:
                continue
            path = self._reference()
            try:
                dev = self.pool.acquire([dev], self.lease_wait_s, self.poll_s, note)
            except MeasurementError as exc:
                note(f"{dev.name}: reference check put off: {exc}")
                continue
            try:
                with LeaseHeartbeat(self.pool, dev.key, dev.lease_s) as beat:
                    self._beat = beat
                    result = self._with_retries(dev, path, sha256_file(path), note, reference=True)
                self._judge(dev, result, note)
            except LeaseLost as exc:
                note(f"{dev.name}: reference check put off: {exc}")
            except DeviceError as exc:
                if exc.blame == "transient":
                    note(f"{dev.name}: reference check put off: {exc}")
                    continue
                self.health.mark(dev.key, str(exc), dev.unhealthy_s)
                self._setups.pop(dev.key, None)
                note(f"{dev.name} marked unhealthy for {dev.unhealthy_s:g} s: {exc}")
            finally:
                self._beat = None
                try:
                    self.pool.release(dev.key)
                except Exception as exc:  # the lease expires anyway
                    note(f"{dev.name}: could not release lease ({exc}); it will expire")

    def _judge(self, dev: DeviceProfile, result: LatencyResult, note: Progress) -> None:
        """Store a reference figure with its verdict; a disagreeing device is taken out of the pool, its
        figures since its last agreeing check flagged and dropped from the cache."""
        assert self.agreement is not None
        if result.contended:  # other work slowed it: it says nothing about the device; checked again next time
            note(f"{dev.name}: reference figure timed beside other work, not judged; checked again at the next "
                 "measurement")
            return
        # The measurement setup and the reference model's bytes: a figure under another of either starts afresh.
        setup = hashlib.sha256(f"{self._setups[dev.key].digest()}:{result.tflite_sha256}".encode()).hexdigest()
        reason = self.agreement.judge(dev.key, setup, result.median_ms)
        since = self.agreement.last_ok(dev.key)  # read before this figure is stored
        self.agreement.record(ReferenceFigure(
            device=dev.key, name=dev.name, holder=self.holder, time=result.measure_start,
            median_ms=result.median_ms, setup=setup, fingerprint=result.fingerprint(),
            verdict=OUT if reason else OK, reason=reason))
        if reason is None:
            self._agreed.add(dev.key)
            if self._taken_out.pop(dev.key, None) is not None:
                note(f"{dev.name} is back in the pool: reference {result.median_ms:.2f} ms agrees again")
            return
        flagged = "no earlier figures to flag"
        if since is not None:
            self.agreement.flag(dev.key, dev.name, since.time, result.measure_end, reason)
            dropped = self.cache.forget(dev.key, epoch_of(since.time), epoch_of(result.measure_end))
            clock = datetime.fromisoformat(since.time).astimezone(timezone.utc).strftime("%H:%M:%S")
            flagged = (f"its figures since {clock} UTC flagged"
                       + (f" ({dropped} cached figure(s) to time again)" if dropped else ""))
        if not any(other.key != dev.key and self.health.reason(other.key) is None for other in self.devices):
            # Taking out the last usable device would stop the search instead of correcting it: it stays in use,
            # and is checked again at every measurement until it agrees, each window flagged meanwhile.
            note(f"{dev.name} disagrees: {reason}; {flagged}; it is the pool's only usable device, so it stays in "
                 "use and is checked again at the next measurement")
            return
        why = self._taken_out[dev.key] = f"{dev.name} taken out of the pool: {reason}"
        self.health.mark(dev.key, why, dev.unhealthy_s)
        self._setups.pop(dev.key, None)
        note(f"{dev.name} taken out of the pool: {reason}; {flagged}; probed again in {dev.unhealthy_s:g} s")

    def _known_hit(self, sha: str) -> LatencyResult | None:
        """A cached figure for a device whose measurement setup this process already knows."""
        for dev in self.devices:
            setup = self._setups.get(dev.key)
            if setup is not None and self.health.reason(dev.key) is None:
                record = self.cache.get(sha, dev.key, setup)
                if record is not None:
                    return LatencyResult.from_record(record, cached=True)
        return None

    def _backend(self, dev: DeviceProfile, note: Progress) -> Backend:
        backend = self._backends.get(dev.key)
        if backend is None:
            backend = make_backend(dev, self.trust_new_host_keys, note)
            self._backends[dev.key] = backend
        backend.notify = note
        return backend

    def _renew(self, dev: DeviceProfile, when: str = "before timing") -> None:
        """Make sure the lease is still ours (the heartbeat keeps it alive); LeaseLost if not."""
        if (self._beat is not None and self._beat.lost) or not self.pool.renew(dev.key, dev.lease_s):
            raise LeaseLost(f"{dev.name}: lease lost {when} (it expired and another worker may "
                            "have used the device)")

    def _setup(self, dev: DeviceProfile, backend: Backend, env: dict[str, Any]) -> MeasureSetup:
        """The cache key's setup part, from a probe's or a run's output."""
        return MeasureSetup(threads=dev.threads, warmup=dev.warmup, runs=dev.runs,
                            runtime_version=env.get("runtime_version"),
                            runner_sha256=backend.runner_sha256, board=backend.board_id(env),
                            repeats=dev.repeats, repeat_gap_s=dev.repeat_gap_s,
                            threads_fixed=dev.threads_fixed,
                            governor=str(env.get("cpu_governor") or "unknown"))

    def _with_retries(self, dev: DeviceProfile, path: Path, sha: str, note: Progress, reference: bool = False
                      ) -> LatencyResult:
        """One leased session, reconnecting with back-off when the link drops or the device is busy.

        A device busy with another runner is waited for while `busy_wait_s` lasts; that wait uses up no attempt.
        """
        backend = self._backend(dev, note)
        attempts = dev.retries + 1
        attempt = 1
        self._busy_since = None
        while True:
            try:
                return self._session(dev, backend, path, sha, note, reference)
            except DeviceError as exc:
                if not exc.retry:
                    raise
                backend.close()
                if isinstance(exc, DeviceBusy) and self.busy_wait_s > 0:
                    self._wait_while_busy(dev, exc, note)
                    continue
                if attempt == attempts:
                    raise DeviceError(f"{exc} (gave up after {attempts} attempts)",
                                      blame=exc.blame) from None
                delay = dev.retry_backoff_s * 2 ** (attempt - 1)
                note(f"{exc}; retrying in {delay:g} s (attempt {attempt + 1} of {attempts})")
                time.sleep(delay)
                attempt += 1

    def _wait_while_busy(self, dev: DeviceProfile, exc: DeviceBusy, note: Progress) -> None:
        """One pause of the wait for another runner to finish on `dev` (the lease heartbeat keeps ours meanwhile);
        says so when the wait starts, and gives up (DeviceError) once `busy_wait_s` has passed."""
        now = time.monotonic()
        if self._busy_since is None:
            self._busy_since = now
            note(f"{dev.name}: busy, another runner is timing on this device; waiting (up to {self.busy_wait_s:g} s)")
        left = self.busy_wait_s - (now - self._busy_since)
        if left <= 0:
            self._busy_since = None
            raise DeviceError(f"{exc} (still busy after waiting {self.busy_wait_s:g} s)", blame="transient")
        time.sleep(min(self.busy_poll_s, left))

    def _when_cool(self, dev: DeviceProfile, note: Progress, call: Callable[[], dict[str, Any]]
                   ) -> dict[str, Any]:
        """Run a device step; while the device is too hot or throttled, wait cooldown_s and retry."""
        for check in range(dev.cooldown_checks + 1):
            self._renew(dev)
            try:
                return call()
            except DeviceError as exc:
                if not exc.cooldown:
                    raise
                error = exc
            if check == dev.cooldown_checks:
                waits = f"{dev.cooldown_checks} cool-down waits of {dev.cooldown_s:g} s"
                if isinstance(error, ContendedRun):  # the figure is measured, only slower: keep it, flagged
                    note(f"{error} after {waits}; keeping it flagged 'contended' (not cached)")
                    return {**error.out, "contended": True}
                if error.temperature_c is None:
                    raise DeviceError(f"{error} after {waits}", blame="transient")
                raise DeviceError(
                    f"{dev.name}: too hot: {error.temperature_c:.1f} °C > max_temp_c "
                    f"{dev.max_temp_c:g} °C after {waits}", blame="transient")
            why = (f"{dev.name}: {error.temperature_c:.1f} °C > {dev.max_temp_c:g} °C"
                   if error.temperature_c is not None else str(error))  # a DeviceError names its device
            note(f"{why}, cooling down {dev.cooldown_s:g} s "
                 f"(check {check + 1} of {dev.cooldown_checks})")
            time.sleep(dev.cooldown_s)
        raise AssertionError("unreachable")

    def _probe(self, dev: DeviceProfile, backend: Backend) -> dict[str, Any]:
        """Probe, turning a temperature over the limit into the same error a run gives."""
        env = backend.probe()
        temp = env.get("temperature_c")
        if temp is not None and temp > dev.max_temp_c:
            raise DeviceError(f"{dev.name}: too hot", blame="transient", temperature_c=float(temp))
        return env

    def _session(self, dev: DeviceProfile, backend: Backend, path: Path, sha: str,
                 note: Progress, reference: bool = False) -> LatencyResult:
        """One timing on a leased device; `reference`: the reference model, always timed afresh and never
        stored in the latency cache."""
        self._renew(dev, "before connecting")
        backend.connect()
        setup = self._setups.get(dev.key)
        board = backend.board_id(None)  # known without a probe where the backend verifies it
        if setup is None or (board is not None and board != setup.board):
            # First contact (or another board behind the name): the probe checks the runtime is
            # there and gives its version and the board, parts of the cache key.
            env = self._when_cool(dev, note, lambda: self._probe(dev, backend))
            setup = self._setups[dev.key] = self._setup(dev, backend, env)
        if self.use_cache and not self._sustained_s and not reference:
            # Also after a lookup before leasing: another worker may have timed it meanwhile.
            record = self.cache.get(sha, dev.key, setup)
            if record is not None:
                note(f"{dev.name}: cached latency {record['median_ms']:.2f} ms")
                return LatencyResult.from_record(record, cached=True)
        self._renew(dev, "before the upload")
        sustained_s = 0.0 if reference else self._sustained_s  # the reference model is timed in bursts only
        file_sha = sha256_file(path)  # `sha` is the cache key; uploads are named by content
        ref = backend.upload(path, file_sha)
        counts = dev.thread_counts
        if self._busy_since is None:  # said once: not again at every try while another runner times
            note(f"{dev.name}: timing {dev.runs} runs after {dev.warmup} warm-up, "
                 f"{'/'.join(map(str, counts))} thread{'s' if counts != (1,) else ''}"
                 + (f", best of {dev.repeats} bursts" if dev.repeats > 1 else "")
                 + (f", then {sustained_s:g} s under sustained load" if sustained_s else ""))
        times: list[str] = []

        def timed_run() -> dict[str, Any]:
            times[:] = [now_iso()]
            out = backend.run(ref, sustained_s)
            times.append(now_iso())
            now = throttled_now(out.get("throttled"))
            if now:  # a throttled board is slower than it is: that figure is wrong, never cached
                raise DeviceError(f"{dev.name}: throttled during the timed run ({', '.join(now)}; "
                                  f"get_throttled {out.get('throttled')}), figure discarded",
                                  blame="transient", cooldown=True)
            share = out.get("other_cpu_share")
            if share is not None and share > dev.max_other_cpu:
                raise ContendedRun(dev, out)
            return out

        out = self._when_cool(dev, note, timed_run)
        # The lease may have run out during the run (database unreachable for longer than lease_s):
        # then another worker may have timed on the device too, and this figure is not trusted.
        self._renew(dev, "during the timed run; figure discarded")
        try:
            result = self._result(dev, out, times, file_sha)
            setup = self._setups[dev.key] = self._setup(dev, backend, out)
        except (KeyError, TypeError, ValueError) as exc:
            raise DeviceError(f"{dev.name}: runner output incomplete ({exc!r}): {out}") from None
        result.board = setup.board
        if not result.contended and not reference:  # the burst figures; a sustained run is never served
            self.cache.put(sha, dev.key, setup, {**result.as_record(), "sustained": None})
        backend.discard_model(ref)
        self._log({"event": "reference" if reference else "measured", "model": str(path), **result.as_record()})
        what = "reference model: " if reference else ""
        note(f"{dev.name}: {what}median {result.median_ms:.2f} ms, p90 {result.p90_ms:.2f} ms")
        return result

    @staticmethod
    def _result(dev: DeviceProfile, out: dict[str, Any], times: list[str], sha: str
                ) -> LatencyResult:
        """The runner's JSON as a LatencyResult."""
        return LatencyResult(
            device=dev.name, threads=int(out.get("threads", dev.thread_counts[0])),
            runtime=str(out.get("runtime")), runtime_version=out.get("runtime_version"),
            median_ms=float(out["median_ms"]), p90_ms=float(out["p90_ms"]),
            min_ms=float(out["min_ms"]), std_ms=float(out["std_ms"]), runs=int(out["runs"]),
            cpu=out.get("cpu"), temperature_c=out.get("temperature_c"),
            # Read after timing: sticky "since boot" bits include anything during the runs.
            throttled=out.get("throttled"),
            measure_start=times[0], measure_end=times[1], tflite_sha256=sha, cached=False,
            input_dtype=out.get("input_dtype"), output_dtype=out.get("output_dtype"),
            warmup=int(out.get("warmup", dev.warmup)), other_cpu_share=out.get("other_cpu_share"),
            contended=bool(out.get("contended", False)), repeats=out.get("repeats"),
            repeat_medians_ms=out.get("repeat_medians_ms"), threads_curve=out.get("threads_curve"),
            cpu_governor=out.get("cpu_governor"), cpu_cur_freq_khz=out.get("cpu_cur_freq_khz"),
            cpu_cur_freq_before_khz=out.get("cpu_cur_freq_before_khz"),
            cpu_max_freq_khz=out.get("cpu_max_freq_khz"), sustained=out.get("sustained"),
            kernel=out.get("kernel"))

    def _log(self, entry: dict[str, Any]) -> None:
        """Append to results/hardware/measurements.jsonl: an audit trail (never secrets)."""
        try:
            log_dir = self.results_dir / "hardware"
            log_dir.mkdir(parents=True, exist_ok=True)
            with open(log_dir / "measurements.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry, sort_keys=True) + "\n")
        except OSError:
            pass  # a log that cannot be written must not fail a measurement
