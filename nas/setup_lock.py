"""One worker at a time creates the study's tables and the study itself.

Optuna creates its schema (and `alembic_version`) without a lock, so workers started together on an
empty PostgreSQL database race and all but one can die with `UniqueViolation`. `setup_lock` holds a
database-wide lock across machines while the storage and the study are opened: a PostgreSQL
advisory lock on its own connection, or a file lock beside a SQLite file (one machine).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock
from sqlalchemy import text
from sqlalchemy.engine import make_url

# An arbitrary constant: every `nas` worker takes the same key; nothing else in the database uses it.
ADVISORY_KEY = 0x6E6173_5354554459  # "nasSTUDY"


@contextmanager
def setup_lock(url: str, timeout_s: float = 300.0) -> Iterator[None]:
    """Hold the study-setup lock of the database at `url` (no-op for other back ends)."""
    backend = make_url(url).get_backend_name()
    if backend == "postgresql":
        with _advisory_lock(url, timeout_s):
            yield
    elif backend == "sqlite" and (database := make_url(url).database) and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{database}.setup.lock", timeout=timeout_s):
            yield
    else:
        yield


@contextmanager
def _advisory_lock(url: str, timeout_s: float) -> Iterator[None]:
    """A session-level advisory lock; the server frees it if this process dies while holding it."""
    from .hardware.pool import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT set_config('lock_timeout', :ms, false)"), {"ms": f"{int(timeout_s * 1000)}"})
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_KEY})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_KEY})
                conn.commit()
    finally:
        engine.dispose()
