"""The backend contract, its errors, and the local backend.

A backend runs `hardware/runner.py` on one device: `probe()` for the environment, `stage_model()`
to put a model where the runner can read it, `run()` to time it. The local backend runs the very
same script as a subprocess, so local and SSH figures come from one timing loop. The shared pieces
(errors, runner output parsing) live here because the local backend is the reference one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Literal

from ..errors import StageError
from .profile import DeviceProfile

RUNNER_PATH = Path(__file__).resolve().parents[2] / "hardware" / "runner.py"

# Runner exit codes (see hardware/runner.py).
EXIT_BAD_INPUT = 2
EXIT_NO_RUNTIME = 3
EXIT_TOO_HOT = 4
EXIT_INVOKE_FAILED = 5

Blame = Literal["device", "transient", "model"]


class MeasurementError(StageError):
    """A latency could not be measured: device unreachable, unhealthy, too hot, or runner failed.

    `str()` is the reason, written for the trial's `fail_reason`.
    """


class DeviceError(MeasurementError):
    """A failure at one device, with what the meter should do about it.

    `retry`: a fresh connection may help (dropped link). `blame`: "device" marks the device
    unhealthy for this process, "transient" skips it for this measurement only (too hot, lease
    lost), "model" fails the measurement without blaming the device (bad model, too slow).
    """

    def __init__(self, message: str, *, retry: bool = False, blame: Blame = "device",
                 temperature_c: float | None = None):
        super().__init__(message)
        self.retry = retry
        self.blame = blame
        self.temperature_c = temperature_c  # set when the device refused to time: too hot


def runner_args(profile: DeviceProfile, model: str | None) -> list[str]:
    """Runner arguments for a probe (model None) or a timed run, from the profile.

    A timed run carries the temperature limit, so the runner itself refuses to time a hot device
    and the meter does not need a probe before every run.
    """
    if model is None:
        return ["--probe"]
    return ["--model", model, "--threads", str(profile.threads), "--warmup", str(profile.warmup),
            "--runs", str(profile.runs), "--max-temp-c", f"{profile.max_temp_c:g}"]


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
    if rc in (EXIT_BAD_INPUT, EXIT_INVOKE_FAILED):
        raise DeviceError(f"{device}: {what} failed: {reason}", blame="model")
    if rc == 127:
        raise DeviceError(f"{device}: {what}: interpreter or runner not found (exit 127): {reason}")
    raise DeviceError(f"{device}: {what}: runner exited with status {rc}: {reason}")


class Backend(ABC):
    """Runs the runner on one device. Not thread-safe: the meter serialises calls per device."""

    def __init__(self, profile: DeviceProfile):
        self.profile = profile
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
    def stage_model(self, path: Path, sha256: str) -> str:
        """Make the model readable by the runner on the device; return the path it has there."""

    @abstractmethod
    def run(self, model_ref: str) -> dict[str, Any]:
        """Time the staged model with the profile's threads/warm-up/runs; the runner's JSON."""

    def discard_model(self, model_ref: str) -> None:
        """Remove a staged copy once its figures are stored (a device keeps no model it timed)."""

    def close(self) -> None:
        """Release connections; the backend can connect again later."""

    @property
    def identity(self) -> str:
        """What was verified about the device's identity, for `nas devices check`."""
        return "this machine"


class LocalBackend(Backend):
    """Runs hardware/runner.py as a subprocess of the profile's interpreter on this machine."""

    def __init__(self, profile: DeviceProfile, runner: Path = RUNNER_PATH):
        super().__init__(profile)
        if not runner.is_file():
            raise MeasurementError(f"runner script not found at {runner}")
        self.runner = runner

    def _call(self, args: list[str], timeout: float, what: str) -> dict[str, Any]:
        """Run the runner with a hard deadline; the whole process group dies on timeout."""
        argv = [self.profile.interpreter, str(self.runner), *args]
        name = self.profile.name
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            raise DeviceError(f"{name}: cannot start {self.profile.interpreter}: "
                              f"{exc.strerror or exc}") from None
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate()
            blame: Blame = "model" if args and args[0] == "--model" else "device"
            raise DeviceError(f"{name}: {what} timed out after {timeout:g} s (process killed)",
                              blame=blame) from None
        return parse_runner_output(name, what, proc.returncode,
                                   out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))

    def probe(self) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            return self._call(runner_args(self.profile, None), self.profile.step_timeout_s, "probe")
        finally:
            self._timed("probe", started)

    def stage_model(self, path: Path, sha256: str) -> str:
        return str(Path(path).resolve())

    def run(self, model_ref: str) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            return self._call(runner_args(self.profile, model_ref), self.profile.measure_timeout_s,
                              "timed run")
        finally:
            self._timed("run", started)
