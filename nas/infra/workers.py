"""Workers as processes on this machine: whether the worker a trial names (`host:pid`, `nas.infra.db.worker_id`)
still runs, and the scratch folders of trials whose worker was killed.

A rerun on the machine where a worker was killed need not wait out the trial's heartbeat: the pid says
the worker is gone. A worker on another machine cannot be judged that way; its trial waits for the heartbeat.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

import psutil

# `trial_scratch` names its folders `nas-trial-NUMBER-PID-RANDOM` in the temporary folder.
SCRATCH = re.compile(r"^nas-trial-\d+-(\d+)-[^-]+$")


def local_pid(worker: str | None) -> int | None:
    """The pid of `worker` ("host:pid") when it ran on this machine; None for another machine's or no worker."""
    host, _, pid = (worker or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    return int(pid)


def pid_running(pid: int, since: float | None = None) -> bool:
    """Whether process `pid` runs (a zombie does not); with `since` (epoch seconds), only a process started by
    then counts: a later one holds a reused pid."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return since is None or process.create_time() <= since + 1.0
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # not ours to look at: it runs
        return True


def worker_gone(worker: str | None, since: float | None = None) -> bool:
    """Whether `worker` ran on this machine and its process no longer runs (`since`: when its trial started).

    This process itself never counts as gone; another machine's worker never does either (unknowable here).
    """
    pid = local_pid(worker)
    return pid is not None and pid != os.getpid() and not pid_running(pid, since)


def trial_scratch(number: int) -> tempfile.TemporaryDirectory:
    """A trial's scratch folder, named with this worker's pid so that a later run can remove it if the worker
    is killed (`remove_dead_scratch`)."""
    return tempfile.TemporaryDirectory(prefix=f"nas-trial-{number}-{os.getpid()}-")


def remove_dead_scratch(folder: str | Path | None = None) -> list[Path]:
    """Remove this user's trial scratch folders whose worker no longer runs, in `folder` (default: the
    temporary folder); the folders removed."""
    removed = []
    for entry in Path(folder or tempfile.gettempdir()).glob("nas-trial-*"):
        match = SCRATCH.match(entry.name)
        try:
            if (not match or entry.is_symlink() or not entry.is_dir() or entry.stat().st_uid != os.getuid()
                    or pid_running(int(match.group(1)))):
                continue
        except OSError:  # gone meanwhile
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed
