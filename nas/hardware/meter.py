"""`LatencyMeter`: the one front door the search calls to get a model's on-device latency.

One `measure()` = cache lookup, lease a healthy device, probe it (runtime present, cool enough),
upload the model, time it with the runner, store the figures, release the device. Failures come
out as `MeasurementError` with a reason a trial can record; the study goes on.
"""

from __future__ import annotations

import dataclasses
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

from nas.files import sha256_file
from nas.hardware.cache import LatencyCache
from nas.hardware.local import Backend, DeviceError, LocalBackend, MeasurementError
from nas.hardware.pool import LeaseHeartbeat, LeasePool, make_engine
from nas.hardware.profile import DeviceProfile
from nas.hardware.ssh import SshBackend

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

    def as_record(self) -> dict[str, Any]:
        """JSON-safe dict, ready for Optuna user attrs."""
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any], cached: bool) -> LatencyResult:
        """Rebuild from a stored record, ignoring keys a newer version may have added."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in record.items() if k in names}
        values["cached"] = cached
        return cls(**values)


def now_iso() -> str:
    """Current time as ISO 8601 with a time zone (UTC), millisecond resolution."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def make_backend(profile: DeviceProfile, trust_new_host_keys: bool = False,
                 notify: Progress | None = None) -> Backend:
    """The backend for a profile's kind."""
    if profile.kind == "ssh":
        return SshBackend(profile, trust_new_host_keys=trust_new_host_keys, notify=notify)
    return LocalBackend(profile)


def default_holder() -> str:
    """A lease holder name unique to this meter: host, process, and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class LatencyMeter:
    """Measures `.tflite` latency on a pool of devices, with leases, a cache and health tracking.

    One meter per worker. `measure()` calls are serialised by a lock, so a meter shared by threads
    stays correct (it is one lease holder). Keyword-only extras: `lease_wait_s` bounds the wait for
    a free device, `poll_s` is the lease polling period, `use_cache=False` forces a fresh timing
    (benchmarks); the figures are still stored.
    """

    def __init__(self, devices: Sequence[DeviceProfile], storage_url: str, results_dir: Path,
                 holder: str | None = None, trust_new_host_keys: bool = False, *,
                 lease_wait_s: float = 1800.0, poll_s: float = 2.0, use_cache: bool = True):
        if not devices:
            raise ValueError("LatencyMeter needs at least one device")
        self.devices = list(devices)
        self.results_dir = Path(results_dir)
        self.holder = holder or default_holder()
        self.trust_new_host_keys = trust_new_host_keys
        self.lease_wait_s = lease_wait_s
        self.poll_s = poll_s
        self.use_cache = use_cache
        self.engine = make_engine(storage_url)
        self.pool = LeasePool(self.engine, self.holder)
        self.cache = LatencyCache(self.engine)
        self.step_seconds: dict[str, float] = {}  # last measure(), by step (benchmarks read it)
        self._backends: dict[str, Backend] = {}
        self._versions: dict[str, str | None] = {}  # runtime version seen per device key
        self._unhealthy: dict[str, str] = {}  # device key -> reason, for this process
        self._lock = threading.Lock()
        self._beat: LeaseHeartbeat | None = None  # keeps the current lease alive

    # ---- public -----------------------------------------------------------------------------

    @property
    def unhealthy(self) -> dict[str, str]:
        """Devices this meter stopped using, with the reason (device name -> reason)."""
        names = {d.key: d.name for d in self.devices}
        return {names[k]: why for k, why in self._unhealthy.items()}

    def measure(self, tflite_path: Path, progress: Progress | None = None, key: str | None = None
                ) -> LatencyResult:
        """Latency of one `.tflite` on a healthy device of the pool (cached figures if any).

        `key` names what determines the latency when it is more than these bytes: a graph key
        (architecture, precision, resolution, converter) lets every trained copy of one graph share
        one measurement. Without it the file's sha256 is the key.
        """
        note: Progress = progress or (lambda _msg: None)
        path = Path(tflite_path)
        if not path.is_file():
            raise MeasurementError(f"model file not found: {path}")
        with self._lock:
            started = time.perf_counter()
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
        if self.use_cache:
            hit = self._known_hit(sha)
            if hit is not None:
                note(f"{hit.device}: cached latency {hit.median_ms:.2f} ms")
                return hit
        skipped: dict[str, str] = {}  # devices given up on for this measurement only
        while True:
            healthy = [d for d in self.devices
                       if d.key not in self._unhealthy and d.key not in skipped]
            if not healthy:
                reasons = list(self._unhealthy.values())
                reasons += [why for k, why in skipped.items() if k not in self._unhealthy]
                raise MeasurementError("no healthy device left: " + "; ".join(reasons))
            if self.use_cache:
                # Devices that already timed this file first: a cache hit costs no device time.
                have = self.cache.devices_with(sha, [d.key for d in healthy])
                healthy.sort(key=lambda d: d.key not in have)
            lease_started = time.perf_counter()
            dev = self.pool.acquire(healthy, self.lease_wait_s, self.poll_s, note)
            self.step_seconds["lease_wait"] = (self.step_seconds.get("lease_wait", 0.0)
                                               + time.perf_counter() - lease_started)
            try:
                with LeaseHeartbeat(self.pool, dev.key, dev.lease_s) as beat:
                    self._beat = beat
                    return self._with_retries(dev, path, sha, note)
            except DeviceError as exc:
                if exc.blame == "model":
                    raise
                if exc.blame == "device":
                    self._unhealthy[dev.key] = str(exc)
                    note(f"{dev.name} marked unhealthy for this run: {exc}")
                else:
                    note(f"{dev.name} skipped for this model: {exc}")
                skipped[dev.key] = str(exc)
            finally:
                self._beat = None
                try:
                    self.pool.release(dev.key)
                except Exception as exc:  # the lease expires anyway; never mask the real outcome
                    note(f"{dev.name}: could not release lease ({exc}); it will expire")

    def _known_hit(self, sha: str) -> LatencyResult | None:
        """A cached figure for a device whose runtime version this process already knows."""
        for dev in self.devices:
            if dev.key in self._versions:
                record = self.cache.get(sha, dev.key, dev.threads, self._versions[dev.key])
                if record is not None:
                    return LatencyResult.from_record(record, cached=True)
        return None

    def _backend(self, dev: DeviceProfile, note: Progress) -> Backend:
        backend = self._backends.get(dev.key)
        if backend is None:
            backend = make_backend(dev, self.trust_new_host_keys, note)
            self._backends[dev.key] = backend
        elif isinstance(backend, SshBackend):
            backend.notify = note
        return backend

    def _renew(self, dev: DeviceProfile) -> None:
        """Before each step: make sure the lease is still ours (the heartbeat keeps it alive)."""
        if (self._beat is not None and self._beat.lost) or not self.pool.renew(dev.key, dev.lease_s):
            raise DeviceError(f"{dev.name}: lease lost (it expired and another worker took the "
                              "device); not timing", blame="transient")

    def _with_retries(self, dev: DeviceProfile, path: Path, sha: str, note: Progress
                      ) -> LatencyResult:
        """One leased session, reconnecting with back-off when the link drops."""
        backend = self._backend(dev, note)
        attempts = dev.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return self._session(dev, backend, path, sha, note)
            except DeviceError as exc:
                if not exc.retry:
                    raise
                backend.close()
                if attempt == attempts:
                    raise DeviceError(f"{exc} (gave up after {attempts} attempts)") from None
                delay = dev.retry_backoff_s * 2 ** (attempt - 1)
                note(f"{exc}; retrying in {delay:g} s (attempt {attempt + 1} of {attempts})")
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _when_cool(self, dev: DeviceProfile, note: Progress, call: Callable[[], dict[str, Any]]
                   ) -> dict[str, Any]:
        """Run a device step; while the device reports too hot, wait cooldown_s and try again."""
        for check in range(dev.cooldown_checks + 1):
            self._renew(dev)
            try:
                return call()
            except DeviceError as exc:
                if exc.temperature_c is None:
                    raise
                temp = exc.temperature_c
            if check == dev.cooldown_checks:
                raise DeviceError(
                    f"{dev.name}: too hot: {temp:.1f} °C > max_temp_c {dev.max_temp_c:g} °C after "
                    f"{dev.cooldown_checks} cool-down waits of {dev.cooldown_s:g} s",
                    blame="transient")
            note(f"{dev.name}: {temp:.1f} °C > {dev.max_temp_c:g} °C, cooling down "
                 f"{dev.cooldown_s:g} s (check {check + 1} of {dev.cooldown_checks})")
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
                 note: Progress) -> LatencyResult:
        self._renew(dev)
        if dev.kind == "ssh":
            note(f"{dev.name}: connecting to {dev.address}")
        backend.connect()
        env: dict[str, Any] = {}
        if dev.key not in self._versions:
            # First contact in this process: the probe checks the runtime is there and gives the
            # runtime version, the last part of the cache key. Later runs check both themselves.
            env = self._when_cool(dev, note, lambda: self._probe(dev, backend))
            self._versions[dev.key] = env.get("runtime_version")
        if self.use_cache:
            # Also after a lookup before leasing: another worker may have timed it meanwhile.
            record = self.cache.get(sha, dev.key, dev.threads, self._versions[dev.key])
            if record is not None:
                note(f"{dev.name}: cached latency {record['median_ms']:.2f} ms")
                return LatencyResult.from_record(record, cached=True)
        self._renew(dev)
        if dev.kind == "ssh":
            note(f"{dev.name}: uploading model ({path.stat().st_size / 1e6:.1f} MB)")
        file_sha = sha256_file(path)  # `sha` is the cache key; uploads are named by content
        ref = backend.stage_model(path, file_sha)
        note(f"{dev.name}: timing {dev.runs} runs after {dev.warmup} warm-up, {dev.threads} threads")
        times: list[str] = []

        def timed_run() -> dict[str, Any]:
            times[:] = [now_iso()]
            result = backend.run(ref)
            times.append(now_iso())
            return result

        out = self._when_cool(dev, note, timed_run)
        try:
            result = self._result(dev, out, env, times, file_sha)
        except (KeyError, TypeError, ValueError) as exc:
            raise DeviceError(f"{dev.name}: runner output incomplete ({exc!r}): {out}") from None
        self._versions[dev.key] = result.runtime_version
        self.cache.put(sha, dev.key, dev.threads, result.runtime_version, result.as_record())
        backend.discard_model(ref)
        self._log({"event": "measured", "model": str(path), **result.as_record()})
        note(f"{dev.name}: median {result.median_ms:.2f} ms, p90 {result.p90_ms:.2f} ms")
        return result

    @staticmethod
    def _result(dev: DeviceProfile, out: dict[str, Any], env: dict[str, Any], times: list[str],
                sha: str) -> LatencyResult:
        """The runner's JSON as a LatencyResult."""
        return LatencyResult(
            device=dev.name, threads=int(out.get("threads", dev.threads)),
            runtime=str(out.get("runtime")), runtime_version=out.get("runtime_version"),
            median_ms=float(out["median_ms"]), p90_ms=float(out["p90_ms"]),
            min_ms=float(out["min_ms"]), std_ms=float(out["std_ms"]), runs=int(out["runs"]),
            cpu=out.get("cpu"), temperature_c=out.get("temperature_c"),
            # Read after timing: sticky "since boot" bits include anything during the runs.
            throttled=out.get("throttled") or env.get("throttled"),
            measure_start=times[0], measure_end=times[1], tflite_sha256=sha, cached=False,
            input_dtype=out.get("input_dtype"), output_dtype=out.get("output_dtype"))

    def _log(self, entry: dict[str, Any]) -> None:
        """Append to results/hardware/measurements.jsonl: an audit trail (never secrets)."""
        try:
            log_dir = self.results_dir / "hardware"
            log_dir.mkdir(parents=True, exist_ok=True)
            with open(log_dir / "measurements.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry, sort_keys=True) + "\n")
        except OSError:
            pass  # a log that cannot be written must not fail a measurement
