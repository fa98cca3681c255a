"""The local backend: hardware/runner.py as a subprocess on this machine.

The very same script as on a remote device, so local and SSH figures come from one timing loop.
The runner starts in its own session (a timeout kills its whole process group); a worker that is
interrupted kills it too, and the runner's lock file keeps a runner that outlived a killed worker
from overlapping the next one's timed run.

The contract and its errors live in `backend.py`; they are re-exported here for older imports.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from nas.hardware.backend import (RUNNER_PATH, Backend, BackendOptions, Blame, DeviceError, MeasurementError,
                                  parse_runner_output, runner_args)
from nas.hardware.profile import DeviceProfile


LOCK_ENV = "NAS_RUNNER_LOCK"  # another lock file, for tests that hold it without stopping every other runner


def local_lock_path() -> Path:
    """This machine's runner lock: one per user, in a folder only that user can write."""
    if value := os.environ.get(LOCK_ENV):
        return Path(value)
    return Path.home() / ".cache" / "nas-bench" / "runner.lock"


class LocalBackend(Backend):
    """Runs hardware/runner.py as a subprocess of the profile's interpreter on this machine."""

    def __init__(self, profile: DeviceProfile, options: BackendOptions | None = None,
                 runner: Path = RUNNER_PATH, lock: Path | None = None):
        try:
            super().__init__(profile, options, runner)
        except DeviceError as exc:
            raise MeasurementError(str(exc)) from None
        self.lock = lock or local_lock_path()

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()

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
            self._kill(proc)
            blame: Blame = "model" if args and args[0] == "--model" else "device"
            raise DeviceError(f"{name}: {what} timed out after {timeout:g} s (process killed)",
                              blame=blame) from None
        except BaseException:
            # Ctrl-C (or any error here): its own session would keep the runner timing unseen.
            self._kill(proc)
            raise
        return parse_runner_output(name, what, proc.returncode,
                                   out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))

    def probe(self) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            return self._call(runner_args(self.profile, None), self.profile.step_timeout_s, "probe")
        finally:
            self._timed("probe", started)

    def upload(self, path: Path, sha256: str) -> str:
        return str(Path(path).resolve())

    def run(self, model_ref: str, sustained_s: float = 0.0) -> dict[str, Any]:
        self.lock.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        started = time.perf_counter()
        try:
            return self._call(runner_args(self.profile, model_ref, str(self.lock), sustained_s),
                              self.profile.measure_timeout_s + sustained_s, "timed run")
        finally:
            self._timed("run", started)
