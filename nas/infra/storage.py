"""Checks that come before any write: the study database answers, and the folders outputs go to can take them.

A command that only reads a study (`nas report`, `nas finalize`, `nas dashboard`) must never create one: opening
a SQLite URL creates the file and its folders, so a mistyped `--results`, `--storage` or `--study` would leave an
empty `nas.db` behind and report "no study". A command that writes (`nas run`) checks the database before it
creates anything beside it. Every problem is one ConfigError naming the file, the flag or the URL (password
masked) and what is wrong.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from nas.errors import ConfigError
from nas.infra.db import hide_password, make_engine

SUPPORTED = "sqlite:///PATH or postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
NO_DATABASE = "no study database at {path}; run `nas run` first, or pass --storage / --results"


def _first_line(exc: BaseException) -> str:
    reason = getattr(exc, "orig", None) or exc
    return (str(reason).strip().splitlines() or [type(reason).__name__])[0]


def sqlite_path(url: str) -> Path | None:
    """The file of a `sqlite:///PATH` URL, None for any other URL."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def check_database(url: str, *, create: bool) -> None:
    """The storage URL is one nas can use and its database answers; ConfigError otherwise, before any write.

    `create` False (a command that reads a study): a SQLite file must already exist. True (`nas run`): its
    folder must be one that can be created and written.
    """
    shown = hide_password(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(None, f"--storage {shown!r} is not a database URL; give {SUPPORTED}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise ConfigError(None, f"--storage {shown}: an in-memory database keeps no study; give {SUPPORTED}")
        path = Path(parsed.database)
        if path.is_dir():
            raise ConfigError(path, "is a folder, not a study database (--storage / --results)")
        if path.is_file():
            if not create:
                return
        elif not create:
            blocked = _blocking_file(path.parent)
            if blocked is not None:
                raise ConfigError(blocked, "is a file, not a folder (--results / --storage)")
            raise ConfigError(None, NO_DATABASE.format(path=path))
        check_writable_folder(path.parent, "--results / --storage")
        return
    if backend != "postgresql":
        raise ConfigError(None, f"--storage {shown}: {backend} databases are not supported; give {SUPPORTED}")
    try:
        engine = make_engine(url)
    except (ArgumentError, ImportError) as exc:
        raise ConfigError(None, f"--storage {shown}: {_first_line(exc)}") from None
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
    except SQLAlchemyError as exc:  # unreachable server, wrong credentials, no such database
        raise ConfigError(None, f"cannot reach the study database {shown}: {_first_line(exc)}") from None
    finally:
        engine.dispose()


def _blocking_file(folder: Path) -> Path | None:
    """The nearest existing ancestor of `folder` (itself included) when it is not a folder, else None."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def check_writable_folder(folder: Path, flag: str) -> None:
    """`folder` exists as a writable folder, or can be made: its nearest existing ancestor is a writable folder.

    Nothing is created: a run that fails a later check leaves no folder behind. (A read-only file system is
    refused even for root; plain permission bits are not, since root writes through them.)
    """
    folder = Path(folder)
    for candidate in (folder, *folder.parents):
        if not candidate.exists():
            continue
        if not candidate.is_dir():
            raise ConfigError(candidate, f"is a file, not a folder ({flag} {folder})")
        if not os.access(candidate, os.W_OK | os.X_OK):
            why = "read-only file system" if _read_only_mount(candidate) else "no write permission"
            raise ConfigError(candidate, f"cannot be written ({why}; {flag} {folder})")
        if _read_only_mount(candidate):
            raise ConfigError(candidate, f"cannot be written (read-only file system; {flag} {folder})")
        return


def _read_only_mount(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False
