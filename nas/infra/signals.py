"""SIGTERM handled as Ctrl-C, so a stopped worker (systemd, docker stop, kill, a batch scheduler) leaves
its running trial failed with a reason instead of RUNNING until the heartbeat gives up on it."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Terminated(KeyboardInterrupt):
    """Raised by SIGTERM. A KeyboardInterrupt, so everything that cleans up after Ctrl-C does so after it
    too: Optuna fails the running trial, the meter releases its device lease, locks are let go."""

    signal_name = "SIGTERM"


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM during clean-up ends the process at once
    raise Terminated()


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` in the main thread (elsewhere: nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
