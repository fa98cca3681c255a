"""Conversion children started ahead of need, so a conversion does not wait for TensorFlow to import.

Every conversion runs in a child process of its own (`onnx2tf_job` says why); importing onnx2tf,
TensorFlow with it, is about 4 s of each on a 2-core CPU (`benchmarks/README.md`, conversion_cost). A
spare child pays that import while the worker trains, then waits on its stdin for the one job it
will run, and exits: nothing carries over from one conversion to the next, as before.

Spares are started when training on a GPU starts (`keep_ready`), so their imports run on CPU cores
that training leaves idle, not beside a latency measurement on this machine (the meter would find it
busy); an idle spare uses no CPU. A CPU-only worker starts none: its training uses every core, and
there the imports slowed training by about what they saved the conversions (measured). A spare reads
end-of-input when its parent exits, however it exits, and ends, so none outlives a worker.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
from dataclasses import dataclass

JOB_MODULE = "nas.export.onnx2tf_job"  # the conversion child, fresh (`-m JOB_MODULE ARGS`) or spare (`--spare`)


def child_env() -> dict[str, str]:
    """The environment of a conversion child: quiet TensorFlow, no GPU (conversion is CPU work and must not
    take the memory training uses)."""
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


@dataclass
class _Spare:
    process: subprocess.Popen
    started_for: tuple  # (interpreter, environment): a spare serves only a parent that would start the same child


class SpareConverters:
    """At most a few idle conversion children of this process, each used for one conversion."""

    def __init__(self) -> None:
        self._spares: list[_Spare] = []

    @staticmethod
    def _wanted() -> tuple:
        return sys.executable, tuple(sorted(child_env().items()))

    def _drop_stale(self) -> tuple:
        """Dismiss spares that died or were started for another interpreter or environment; what is wanted now."""
        wanted = self._wanted()
        self._drop(lambda spare: spare.process.poll() is not None or spare.started_for != wanted)
        return wanted

    def keep_ready(self, count: int) -> None:
        """Start spares until `count` live ones for this interpreter and environment wait."""
        wanted = self._drop_stale()
        while len(self._spares) < count:
            process = subprocess.Popen([sys.executable, "-m", JOB_MODULE, "--spare"], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(), text=True)
            self._spares.append(_Spare(process, wanted))

    def take(self) -> subprocess.Popen | None:
        """A live spare for this interpreter and environment, no longer counted as spare; None when none waits."""
        self._drop_stale()
        return self._spares.pop(0).process if self._spares else None

    def dismiss_all(self) -> None:
        self._drop(lambda spare: True)

    def _drop(self, unwanted) -> None:
        keep = []
        for spare in self._spares:
            if unwanted(spare):
                _dismiss(spare.process)
            else:
                keep.append(spare)
        self._spares = keep

    def __len__(self) -> int:
        return len(self._spares)


def _dismiss(process: subprocess.Popen) -> None:
    """End a spare that never got a job (killed: it holds nothing worth finishing)."""
    if process.poll() is None:
        process.kill()
    process.communicate()


SPARES = SpareConverters()  # this process's spares (one worker process: one set)
atexit.register(SPARES.dismiss_all)  # a normal exit ends them at once; any other exit closes their stdin
