"""What every benchmark writes with its figures, and where: `benchmarks/results/<name>/<file>.json`.

A figure is only worth comparing when one knows the code and the machine that produced it; the results
written before this module carry neither the commit nor, consistently, the machine. `write_result` stamps
both, with the command line and the date, and writes the file atomically (a temporary file renamed over
the target) so a benchmark stopped while writing never leaves half a JSON file behind.

Light on purpose (standard library only): scripts that never touch torch or nas import it too.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "benchmarks" / "results"
STAMP_KEYS = ("benchmark", "commit", "machine", "command", "date")


def results_path(name: str, file: str | None = None, suffix: str = "") -> Path:
    """`benchmarks/results/<name>/<file><suffix>.json`; without `file`, one named by the UTC date and minute.

    A dated default means a new run never writes over an earlier one (an earlier result was lost that
    way); rename the file after what it measured when a page cites it.
    """
    stem = (file or datetime.now(timezone.utc).strftime("%Y-%m-%d-%H%M")).removesuffix(".json") + suffix
    return RESULTS / name / f"{stem}.json"


def _git(*argv: str) -> str | None:
    try:
        done = subprocess.run(["git", *argv], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def commit_stamp() -> dict[str, Any]:
    """HEAD and whether the tree had changes: a dirty tree's figures belong to no commit exactly."""
    head = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"sha": head, "dirty": None if status is None else bool(status)}


def cpu_model() -> str:
    """The CPU's model name: lscpu's, /proc/cpuinfo's where lscpu is missing, else the platform's."""
    for read in (lambda: subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout,
                 lambda: Path("/proc/cpuinfo").read_text()):
        try:
            text = read()
        except (OSError, subprocess.SubprocessError):
            continue
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() == "model name":
                return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def gpu() -> str | None:
    """The CUDA device's name, only where torch is already imported: stamping must not import it."""
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:  # a broken driver must not cost a finished benchmark its figures
        return None
    return None


def machine_stamp() -> dict[str, Any]:
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "memory_gib": memory_gib(), "gpu": gpu(),
            "platform": platform.platform(), "python": platform.python_version(),
            "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}


def stamp(name: str) -> dict[str, Any]:
    return {"benchmark": name, "commit": commit_stamp(), "machine": machine_stamp(),
            "command": " ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def write_result(name: str, payload: dict[str, Any], file: str | None = None, *,
                 path: Path | None = None) -> Path:
    """Write `payload` with the stamp to `path`, or to `results_path(name, file)`; return where it went.

    The stamp's keys come first. A payload that brings its own `machine` dict adds to the stamp's (the
    runtime it timed with, say); any other payload key that clashes with a stamp key is kept beside it
    as `<key>_given`, never dropped: a long benchmark must not lose a figure at its last step.
    """
    target = Path(path) if path is not None else results_path(name, file)
    record = stamp(name)
    for key, value in payload.items():
        if key == "machine" and isinstance(value, dict):
            record["machine"] = {**value, **record["machine"]}
        elif key in STAMP_KEYS:
            record[f"{key}_given"] = value
        else:
            record[key] = value
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(record, handle, indent=2, default=str)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o644)  # mkstemp's 0600 would follow the file into git
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return target
