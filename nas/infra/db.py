"""The study database, below everything that uses it (the study, the device leases, the outage riding).

One engine factory (`make_engine`) with the driver and time-out choices, URL masking for anything
printed or stored (`hide_password`), the worker's name (`worker_id`), and the set-up lock.

One worker at a time creates the study's tables and the study itself: Optuna creates its schema (and
`alembic_version`) without a lock, so workers started together on an empty PostgreSQL database race and
all but one can die with `UniqueViolation`. `setup_lock` holds a database-wide lock across machines while
the storage and the study are opened: a PostgreSQL advisory lock on its own connection, or a file lock
beside a SQLite file (one machine).
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock
from sqlalchemy import MetaData, Table, create_engine, inspect, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.pool import NullPool


def worker_id() -> str:
    """This process as a worker: `host:pid`, its trials' `worker` attribute and its device lease holder."""
    return f"{socket.gethostname()}:{os.getpid()}"


_USERINFO_PASSWORD = re.compile(r"(://[^:/@?#]*:)[^@/?#]*@")
# Query keys that carry a secret: libpq's `password` and `sslpassword`, PyMySQL's `passwd`, and any
# other driver argument whose name says it is one (SQLAlchemy hands every query key to the driver).
_QUERY_SECRET = re.compile(r"([?&;][^=&#]*(?:pass(?:word|wd)|secret|token)[^=&#]*=)[^&#]*", re.IGNORECASE)


def hide_password(url: str) -> str:
    """A storage URL fit to print or store: every password in it replaced by ***.

    That is the one in the user part (`postgresql://u:pw@h/db`) and those in the query string
    (`postgresql://u@h/db?password=pw`, `?sslpassword=pw`), which SQLAlchemy passes to the driver as
    keyword arguments and which its own masking leaves in clear. A string SQLAlchemy cannot parse is
    masked by pattern, as it may still end up in an error message.
    """
    try:
        shown = make_url(url).render_as_string(hide_password=True)  # query values come out %-encoded
    except ArgumentError:
        shown = _USERINFO_PASSWORD.sub(r"\1***@", url)
    return _QUERY_SECRET.sub(r"\1***", shown)


def _driver_url(url: str) -> URL:
    """Parse the URL; plain `postgresql://` uses psycopg2 when psycopg 3 is not installed.

    SQLAlchemy 2.1 maps `postgresql://` to psycopg 3, while the pinned dependency is psycopg2.
    """
    parsed = make_url(url)
    if parsed.drivername == "postgresql" and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed


def create_tables(engine: Engine, metadata: MetaData, tables: Sequence[Table]) -> None:
    """`create_all` that tolerates another worker creating the same table at the same moment."""
    try:
        metadata.create_all(engine, tables=list(tables), checkfirst=True)
    except DBAPIError:
        inspector = inspect(engine)
        if not all(inspector.has_table(t.name) for t in tables):
            raise


DB_CONNECT_TIMEOUT_S = 10  # an unreachable server is reported in seconds, not after the OS's TCP timeout


def make_engine(url: str) -> Engine:
    """An engine for the study's storage URL (SQLite waits up to 30 s on a locked file)."""
    parsed = _driver_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        # NullPool: no connection lingers holding the file between the short lease statements.
        return create_engine(parsed, connect_args={"timeout": 30}, poolclass=NullPool)
    return create_engine(parsed, pool_pre_ping=True, pool_size=2, max_overflow=2,
                         connect_args={"connect_timeout": DB_CONNECT_TIMEOUT_S})


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
