"""The backend contract every device kind keeps, its errors, and the registry of kinds.

A backend runs `hardware/runner.py` on one device, so every figure comes from one timing loop:

* `connect()`: open what the device needs and say (through `notify`) what it is doing;
* `probe()`: runtime, version, CPU, temperature and throttle state, without timing;
* `upload(path, sha256)`: make the model readable by the runner there; returns its path there;
* `run(ref)`: time it with the profile's threads/warm-up/runs, holding the device's runner lock;
* `board_id(env)`: who the board behind the name is (a cache key part: a swapped board re-times);
* `discard_model(ref)`, `close()`.

Failures are `DeviceError`s that say what the meter should do (retry, skip, mark unhealthy, blame
the model). Kinds are looked up by name (`create_backend`), like Optuna's storages, so the meter
never names one and a new kind (adb, another board) is one file plus one `register_backend` line.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from nas.errors import StageError
from nas.hardware.kinds import KINDS, backend_kinds
from nas.hardware.profile import DeviceProfile

RUNNER_PATH = Path(__file__).resolve().parents[2] / "hardware" / "runner.py"

# Runner exit codes (see hardware/runner.py).
EXIT_BAD_INPUT = 2
EXIT_NO_RUNTIME = 3
EXIT_TOO_HOT = 4
EXIT_INVOKE_FAILED = 5
EXIT_BUSY = 6

Blame = Literal["device", "transient", "model"]
Notify = Callable[[str], None]


class MeasurementError(StageError):
    """A latency could not be measured: device unreachable, unhealthy, too hot, or runner failed.

    `str()` is the reason, written for the trial's `fail_reason`.
    """


class DeviceError(MeasurementError):
    """A failure at one device, with what the meter should do about it.

    `retry`: a fresh connection may help (dropped link, device busy). `blame`: "device" marks the
    device unhealthy for `unhealthy_s`, "transient" skips it for this measurement only (too hot,
    lease lost), "model" fails the measurement without blaming the device (bad model, too slow).
    `cooldown`: waiting `cooldown_s` and timing again may help (too hot, throttled).
    """

    def __init__(self, message: str, *, retry: bool = False, blame: Blame = "device",
                 temperature_c: float | None = None, cooldown: bool = False):
        super().__init__(message)
        self.retry = retry
        self.blame = blame
        self.temperature_c = temperature_c  # set when the device refused to time: too hot
        self.cooldown = cooldown or temperature_c is not None


class DeviceBusy(DeviceError):
    """Another runner holds the device's runner lock (another process times on it): worth waiting for."""

    def __init__(self, message: str):
        super().__init__(message, retry=True, blame="transient")


class LeaseLost(DeviceError):
    """The device lease was gone at a check: whatever was timed meanwhile is not trusted."""

    def __init__(self, message: str):
        super().__init__(message, blame="transient")


def runner_args(profile: DeviceProfile, model: str | None, lock: str | None = None, sustained_s: float = 0.0
                ) -> list[str]:
    """Runner arguments for a probe (model None) or a timed run, from the profile.

    A timed run carries the temperature limit, so the runner itself refuses to time a hot device
    and the meter does not need a probe before every run; `lock` is the device's runner lock file.
    """
    if model is None:
        return ["--probe"]
    threads = ",".join(str(count) for count in profile.thread_counts)
    args = ["--model", model, "--threads", threads, "--warmup", str(profile.warmup),
            "--runs", str(profile.runs), "--repeats", str(profile.repeats),
            "--repeat-gap-s", f"{profile.repeat_gap_s:g}", "--max-temp-c", f"{profile.max_temp_c:g}",
            "--quiet-check-s", f"{profile.quiet_check_s:g}"]
    if profile.threads_fixed is not None:
        args += ["--threads-fixed", str(profile.threads_fixed)]
    if sustained_s > 0:
        args += ["--sustained-s", f"{sustained_s:g}"]
    return args + ["--lock", lock] if lock else args


def _tail(text: str, limit: int = 600) -> str:
    """The end of a stderr stream, enough to explain a failure without flooding a record."""
    lines = [ln for ln in text.strip().splitlines() if not ln.startswith("INFO: Created TensorFlow")]
    joined = " | ".join(lines)
    return joined if len(joined) <= limit else "..." + joined[-limit:]


def parse_runner_output(device: str, what: str, rc: int, stdout: str, stderr: str) -> dict[str, Any]:
    """Turn the runner's exit code and streams into its JSON payload or a DeviceError."""
    payload: dict[str, Any] | None = None
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                payload = json.loads(line)
            except json.JSONDecodeError:
                continue
            break
    if rc == 0 and payload is not None:
        return payload
    reason = _tail(stderr) or (payload or {}).get("error") or "no output"
    if rc == 0:
        raise DeviceError(f"{device}: {what}: runner printed no JSON ({reason})")
    if rc == EXIT_NO_RUNTIME:
        raise DeviceError(f"{device}: no TFLite runtime on the device: {reason}")
    if rc == EXIT_TOO_HOT:
        temp = (payload or {}).get("temperature_c")
        raise DeviceError(f"{device}: {reason}", blame="transient",
                          temperature_c=float(temp) if temp is not None else float("nan"))
    if rc == EXIT_BUSY:
        # Another runner times on this device (a dropped link's or a killed worker's): later.
        raise DeviceBusy(f"{device}: device busy: {reason}")
    if rc in (EXIT_BAD_INPUT, EXIT_INVOKE_FAILED):
        raise DeviceError(f"{device}: {what} failed: {reason}", blame="model")
    if rc == 127:
        raise DeviceError(f"{device}: {what}: interpreter or runner not found (exit 127): {reason}")
    raise DeviceError(f"{device}: {what}: runner exited with status {rc}: {reason}")


@dataclass(frozen=True)
class BackendOptions:
    """What the caller decides for every backend: trust on first use, where progress goes."""

    trust_new_host_keys: bool = False
    notify: Notify | None = None


class Backend(ABC):
    """Runs the runner on one device. Not thread-safe: the meter serialises calls per device."""

    def __init__(self, profile: DeviceProfile, options: BackendOptions | None = None,
                 runner: Path = RUNNER_PATH):
        options = options or BackendOptions()
        if not runner.is_file():
            raise DeviceError(f"runner script not found at {runner}")
        self.profile = profile
        self.runner = runner
        self.runner_sha256 = hashlib.sha256(runner.read_bytes()).hexdigest()
        self.notify: Notify = options.notify or (lambda _msg: None)
        # Seconds spent per step in the last measurement (read by benchmarks and progress).
        self.step_seconds: dict[str, float] = {}

    def _timed(self, step: str, started: float) -> None:
        self.step_seconds[step] = self.step_seconds.get(step, 0.0) + time.perf_counter() - started

    def connect(self) -> None:
        """Open what the device needs (a connection); a no-op where nothing is needed."""

    @abstractmethod
    def probe(self) -> dict[str, Any]:
        """Runtime, version, CPU, temperature and throttle state, without timing anything."""

    @abstractmethod
    def upload(self, path: Path, sha256: str) -> str:
        """Make the model readable by the runner on the device; return the path it has there."""

    @abstractmethod
    def run(self, model_ref: str, sustained_s: float = 0.0) -> dict[str, Any]:
        """Time the staged model with the profile's threads/warm-up/runs; the runner's JSON. With
        `sustained_s`, the runner then invokes it without pause that long (`sustained` in the JSON)."""

    def discard_model(self, model_ref: str) -> None:
        """Remove a staged copy once its figures are stored (a device keeps no model it timed)."""

    def close(self) -> None:
        """Release connections; the backend can connect again later."""

    def board_id(self, env: dict[str, Any] | None) -> str | None:
        """The board behind the name, from a probe's or run's output (None: not known yet).

        Default: the CPU model and machine the runner reports; a backend that can verify more
        (an SSH host key) says that instead.
        """
        if not env or not env.get("cpu"):
            return None
        return f"{env.get('cpu')} ({env.get('machine')})"

    @property
    def identity(self) -> str:
        """What was verified about the device's identity, for `nas devices check`."""
        return "this machine"


def backend_class(kind: str) -> type[Backend]:
    """The Backend class registered for a kind (imported now if it was registered by name)."""
    try:
        target = KINDS[kind]
    except KeyError:
        raise MeasurementError(f"unknown device kind {kind!r}; known: {', '.join(backend_kinds())}"
                               ) from None
    if isinstance(target, str):
        module, _, name = target.partition(":")
        target = getattr(importlib.import_module(module), name)
        KINDS[kind] = target
    return target


def create_backend(profile: DeviceProfile, options: BackendOptions | None = None) -> Backend:
    """The backend for a profile, by its kind."""
    return backend_class(profile.kind)(profile, options or BackendOptions())
