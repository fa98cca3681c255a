"""A full disk, for real: a small tmpfs where writes past its size fail with ENOSPC."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A real file system of `size` (a tmpfs, e.g. "1m") mounted at `path`: writes past it fail with ENOSPC,
    and pages of a memory map past it with SIGBUS, as on a full disk. Needs root (mount)."""
    if os.geteuid() != 0:
        pytest.fail("mounting a small tmpfs needs root (CI runs as root)", pytrace=False)
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)
