"""Small file helpers shared by the teacher, the latency meter and the device check.

Content hashes key caches and uploads; atomic writes keep a killed worker from leaving half a file
where another process (or the next run) expects a whole one.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from nas.errors import NasRuntimeError

# The names `atomic_path` gives its temporaries: `.NAME.PID.HEX8.tmp`.
TEMPORARY = re.compile(r"^\..+\.\d+\.[0-9a-f]{8}\.tmp$")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in blocks (model files can be hundreds of MB)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full(exc: BaseException) -> bool:
    """Whether `exc` (or an error behind it) is a write that met a full disk or quota."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in DISK_FULL:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextmanager
def atomic_path(path: str | Path, needed: int | None = None) -> Iterator[Path]:
    """A temporary sibling of `path` to write; renamed over `path` on success, removed on error.

    The sibling is hidden and unique per process and call, so concurrent writers never share one,
    and the rename is atomic because it stays on the same file system. A full disk leaves `path` as it
    was and is one NasRuntimeError naming the folder (and `needed` bytes, when the caller knows them).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")  # matches TEMPORARY
    try:
        yield tmp
        os.replace(tmp, path)
    except Exception as exc:
        if isinstance(exc, NasRuntimeError) or not disk_full(exc):  # said already, or not a full disk
            raise
        tmp.unlink(missing_ok=True)  # before measuring what is free
        raise no_space(path.parent, needed, f"writing {path.name}") from None
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` so that readers see the old file or the whole new one, never a part."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` so that readers see the old file or the whole new one, never a part."""
    with atomic_path(path, len(data)) as tmp:
        tmp.write_bytes(data)


def atomic_copy(source: str | Path, path: str | Path) -> Path:
    """Copy `source` to `path` through a temporary sibling: `path` holds its old file or the whole new one.

    The space is checked first, so a copy that cannot fit fails before it fills the disk.
    """
    path = Path(path)
    needed = Path(source).stat().st_size
    require_free_space(path.parent, needed, f"writing {path.name}")
    with atomic_path(path, needed) as tmp:
        shutil.copyfile(source, tmp)
    return path


def atomic_save(path: str | Path, save: Callable[[io.BytesIO], object]) -> Path:
    """`save(buffer)` (torch.save, Image.save with a format, ...) in memory, then written atomically: the
    serializers that fail on a full disk with errors of their own never touch `path` itself."""
    buffer = io.BytesIO()
    save(buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


@contextmanager
def staged_folder(folder: str | Path) -> Iterator[Path]:
    """A hidden sibling folder to build `folder`'s new content in; swapped into place on success.

    `folder` holds its previous content or the whole new one, never a part: the old folder is moved
    aside, the new one renamed in, then the old one removed. On an error the staging folder goes
    (a full disk: one NasRuntimeError naming the folder) and `folder` is left as it was.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}.{uuid.uuid4().hex[:8]}"
    stage = folder.with_name(f".{folder.name}.{tag}.new")
    stage.mkdir()
    try:
        yield stage
        old = folder.with_name(f".{folder.name}.{tag}.old")
        if folder.exists():
            os.rename(folder, old)
        try:
            os.rename(stage, folder)
        except BaseException:
            if old.exists():
                os.rename(old, folder)
            raise
        shutil.rmtree(old, ignore_errors=True)
    except Exception as exc:
        if isinstance(exc, NasRuntimeError) or not disk_full(exc):  # said already, or not a full disk
            raise
        shutil.rmtree(stage, ignore_errors=True)
        raise no_space(folder.parent, None, f"the new {folder.name}") from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)


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
