"""One conversion server per worker process, so a conversion does not wait for TensorFlow to import.

Every conversion runs in a process of its own (`onnx2tf_job` says why). Importing onnx2tf, with
TensorFlow and onnxsim, is about 5 s of each on a 2-core CPU (`benchmarks/conversion_cost.md`).
The server pays that once: it imports them, then forks one child per conversion from that state. A
child starts as a copy of the server taken before any conversion ran and ends with its conversion, so
nothing passes from one graph to the next, as with a fresh process, and a crash ends only that child.
(The imports leave one idle onnxruntime thread, which a forked child lacks; no child has needed it: each
writes the same `.tflite` as a fresh interpreter, byte for byte, in the benchmark and the tests.)

The server starts at the first conversion, or when training on a GPU starts (`start`), so its import
runs on cores training leaves idle. It reads end-of-input when its parent exits, however it exits,
and ends. A server started for another interpreter or environment (a user or a test changing
PYTHONPATH) is replaced before it converts. Without `os.fork` each conversion runs in a fresh child.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

JOB_MODULE = "nas.export.onnx2tf_job"  # the conversion child, fresh (`-m JOB_MODULE ARGS`) or forked (`--serve`)
CHILD_LOG = "conversion.log"  # a forked child's stdout and stderr, in its working directory


def child_env() -> dict[str, str]:
    """The environment of a conversion child: quiet TensorFlow, no GPU (conversion is CPU work and must not
    take the memory training uses)."""
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def _started_for() -> tuple:
    """What a server's children inherit and a fresh child would get now: interpreter and environment."""
    return sys.executable, tuple(sorted(child_env().items()))


class ServerWedged(subprocess.TimeoutExpired):
    """The conversion server itself (not its child) gave no answer in time; it was killed and replaced."""

    def __init__(self, timeout_s: float, margin_s: float):
        self.why = (f"; the conversion server itself stopped answering (no reply within {timeout_s:g} s "
                    f"+ {margin_s:g} s); it was killed, and the next conversion starts a new one")
        super().__init__(JOB_MODULE, timeout_s + margin_s, self.why[2:])


class ConversionServer:
    """This process's conversion server: `run` converts in a child forked from it."""

    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._started_for: tuple = ()
        self._lock = threading.Lock()  # one job on the pipe at a time
        self.starts = 0  # servers started by this process (a study should need one)
        # How long past a job's own timeout the server may take to answer (it may still be importing
        # TensorFlow at the first job, on busy cores); then it is wedged and replaced.
        self.reply_margin_s = 120.0

    def start(self) -> None:
        """Start a server unless a live one for this interpreter and environment waits; returns at once
        (the server imports in the background)."""
        if not hasattr(os, "fork"):
            return
        wanted = _started_for()
        if self._process is not None and self._process.poll() is None and self._started_for == wanted:
            return
        self.stop()
        self._process = subprocess.Popen([sys.executable, "-m", JOB_MODULE, "--serve"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=child_env(),
                                         text=True)
        self._started_for, self.starts = wanted, self.starts + 1

    def run(self, cwd: Path, argv: list[str], timeout_s: float) -> tuple[int, str]:
        """Run the conversion `argv` (onnx2tf_job's arguments) in `cwd`: its exit code (negative: the signal
        that ended it) and its output. subprocess.TimeoutExpired once it ran `timeout_s` (it is killed)."""
        with self._lock:
            self.start()
            if self._process is None:  # no fork here
                return run_fresh(cwd, argv, timeout_s)
            log = Path(cwd) / CHILD_LOG
            job = {"cwd": str(cwd), "argv": argv, "log": str(log), "timeout_s": timeout_s}
            try:
                self._process.stdin.write(json.dumps(job) + "\n")
                self._process.stdin.flush()
                reply = self._reply(timeout_s + self.reply_margin_s)
            except BrokenPipeError:
                reply = ""
            if reply is None:  # the server itself is wedged: end it (and its child); only this job fails
                self._kill()
                raise ServerWedged(timeout_s, self.reply_margin_s)
            if not reply:  # the server itself died (killed from outside): this job runs as before, fresh
                self.stop()
                return run_fresh(cwd, argv, timeout_s)
            result = json.loads(reply)
            output = log.read_text(errors="replace") if log.exists() else ""
            if result["timed_out"]:
                raise subprocess.TimeoutExpired(JOB_MODULE, timeout_s, output)
            return int(result["exit"]), output

    def _reply(self, wait_s: float) -> str | None:
        """The server's one-line answer to a job; "" when it closed its output (it died), None when no whole
        line came within `wait_s` (it is stopped or hung: its own child deadline would have answered)."""
        assert self._process is not None and self._process.stdout is not None
        fd = self._process.stdout.fileno()  # read raw: one job, one line, nothing left buffered
        deadline = time.monotonic() + wait_s
        data = b""
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                return ""
            data += chunk
        return data.decode("utf-8", "replace")

    def _kill(self) -> None:
        """Kill a wedged server and the conversion child it forked (which would outlive it)."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            children = psutil.Process(process.pid).children(recursive=True)
        except psutil.Error:
            children = []
        for proc in [*children, process]:
            try:
                proc.kill()  # SIGKILL also ends a stopped process
            except (psutil.Error, OSError):
                pass
        process.wait()
        for stream in (process.stdin, process.stdout):
            try:
                stream.close()
            except OSError:
                pass

    def stop(self) -> None:
        """End the server: closing its input is its signal to exit."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            process.stdin.close()
            process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()


def run_fresh(cwd: Path, argv: list[str], timeout_s: float) -> tuple[int, str]:
    """The conversion in a new interpreter that imports everything itself."""
    proc = subprocess.run([sys.executable, "-m", JOB_MODULE, *argv], cwd=cwd, env=child_env(),
                          capture_output=True, text=True, timeout=timeout_s)
    return proc.returncode, proc.stdout + proc.stderr


CONVERSIONS = ConversionServer()  # this process's server (one worker process: one server)
atexit.register(CONVERSIONS.stop)  # a normal exit ends it at once; any other exit closes its input
