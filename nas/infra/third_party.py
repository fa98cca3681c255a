"""Other programs' chatter goes to a log file, not to the person at the terminal.

TensorFlow, absl, LiteRT's C++ runtime and Optuna each print start-up and progress lines of their own
("Created TensorFlow Lite XNNPACK delegate for CPU", "A new study created in RDB", CUDA probes). A user
of `nas` reads nas's lines; the others belong in a file that a bug report can attach. `route_to_log` sends
Python-level loggers and warnings there, quiets TensorFlow's C++ logging in this process and its children,
and remembers the file so that `native_stderr_to_log` can catch what native code writes straight to file
descriptor 2 while it runs. `--verbose` (the environment variable `NAS_VERBOSE=1`) leaves everything on the
terminal as it is.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

VERBOSE_ENV = "NAS_VERBOSE"
LOG_ENV = "NAS_THIRD_PARTY_LOG"  # the file, for this process and the children it starts
# Loggers of the libraries that print on their own; their records go to the file at every level.
LIBRARY_LOGGERS = ("optuna", "absl", "tensorflow", "onnx2tf", "py.warnings", "paramiko", "urllib3", "botocore")


def verbose() -> bool:
    """Whether the user asked to see other programs' output on the terminal."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


_routed: Path | None = None  # the log this process routed its own loggers to (children only inherit the path)


def current_log() -> Path | None:
    """The file other programs' output goes to in this process, or None (verbose, or not routed yet): the one
    this process chose, else the one its parent passed down."""
    if _routed is not None:
        return _routed
    value = os.environ.get(LOG_ENV)
    return Path(value) if value else None


def route_to_log(folder: Path, command: str) -> Path | None:
    """Send other programs' output to `folder/<command>-<time>-<pid>.log` from now on; the file's path, or None
    when the user asked for everything on the terminal. Idempotent within a process."""
    global _routed
    if verbose():
        return None
    if _routed is not None:
        return _routed
    log = folder / f"{command}-{datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}.log"
    os.environ[LOG_ENV] = str(log)
    _routed = log
    # TensorFlow's C++ logging, here and in every conversion child: errors still reach the log via stderr.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import optuna  # first: at import it installs a stderr handler of its own, replaced below

    optuna.logging.set_verbosity(optuna.logging.INFO)  # every record, to the file
    handler = _FileHandlerMakingItsFolder(log, delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.propagate = False
    logging.captureWarnings(True)  # library warnings (deprecations, experimental features) to the file too
    return log


class _FileHandlerMakingItsFolder(logging.FileHandler):
    """Opened at the first record: a run that fails its input checks writes no file and no folder."""

    def _open(self):  # type: ignore[override]
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


@contextmanager
def native_stderr_to_log() -> Iterator[None]:
    """While the block runs, what native code writes to file descriptor 2 goes to the log file.

    For libraries that print from C++ (LiteRT's delegate notice): Python-level redirection cannot catch
    them. Nothing changes when no log is routed or the user asked for verbose output.
    """
    log = current_log()
    if log is None or verbose():
        yield
        return
    sys.stderr.flush()
    log.parent.mkdir(parents=True, exist_ok=True)
    saved = os.dup(2)
    try:
        with open(log, "ab") as sink:
            os.dup2(sink.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
