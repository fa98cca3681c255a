"""Small file helpers shared by the teacher, the latency meter and the device check.

Content hashes key caches and uploads; atomic writes keep a killed worker from leaving half a file
where another process (or the next run) expects a whole one.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nas.errors import NasRuntimeError

# The names `atomic_path` gives its temporaries: `.NAME.PID.HEX8.tmp`.
TEMPORARY = re.compile(r"^\..+\.\d+\.[0-9a-f]{8}\.tmp$")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in blocks (model files can be hundreds of MB)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary sibling of `path` to write; renamed over `path` on success, removed on error.

    The sibling is hidden and unique per process and call, so concurrent writers never share one,
    and the rename is atomic because it stays on the same file system.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")  # matches TEMPORARY
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` so that readers see the old file or the whole new one, never a part."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` so that readers see the old file or the whole new one, never a part."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def remove_temporaries(folder: str | Path) -> list[Path]:
    """Delete the `atomic_path` temporaries a killed writer left in `folder`; the paths removed.

    Call it only while holding the lock every writer of `folder` holds, or a live writer loses its file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = [p for p in folder.iterdir() if TEMPORARY.match(p.name) and p.is_file()]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def size_text(n: int) -> str:
    """Bytes as people read them: 812 bytes, 46.1 kB, 13.2 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n} bytes"


def no_space(folder: str | Path, needed: int | None, what: str) -> NasRuntimeError:
    """The one-line error for `what` not fitting on the disk of `folder` (which it names)."""
    free = shutil.disk_usage(folder).free
    need = f"needs {size_text(needed)}" if needed is not None else "does not fit"
    return NasRuntimeError(folder, f"{what} {need}, only {size_text(free)} free on this disk; "
                                   "free some space or use a folder on another disk")


def require_free_space(folder: str | Path, needed: int, what: str) -> None:
    """NasRuntimeError naming `folder` unless its file system has `needed` bytes free.

    Checked before writing through a memory map: there a full disk is not an error but SIGBUS.
    """
    if shutil.disk_usage(folder).free < needed:
        raise no_space(folder, needed, what)
