"""Riding out a study database that goes away for a while (a PostgreSQL restart, a network blip).

Every worker of a search talks to one database for hours; a restart of that server must not end the
search. Three pieces, each small:

- the storage's engine pre-pings pooled connections (`nas.trial.study.open_storage`), so connections that
  died with the old server are replaced instead of failing the next statement;
- `ResilientRDBStorage` keeps Optuna's heartbeat thread alive through an outage (Optuna's thread dies
  on the first failed beat, and the running trial would then be failed as stale by other workers);
- `optimize_through_outages` runs `study.optimize` again after the database comes back, waiting with
  exponential back-off up to `outage_s`, and first fails the trial this worker was running when the
  link broke, with that reason, so the study's records stay true.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import optuna
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError

from nas.infra.console import err as console
from nas.errors import NasRuntimeError
from nas.infra.db import make_engine

FIRST_WAIT_S = 2.0
MAX_WAIT_S = 30.0


class ResilientRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage whose heartbeats survive a database outage: a failed beat is skipped, the next
    one retries. Everything else is Optuna's."""

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except (SQLAlchemyError, optuna.exceptions.StorageInternalError):  # Optuna wraps a failed commit
            pass  # the database is away; the trial is not stale (this worker lives), so just beat again later


def database_reachable(engine: Engine) -> bool:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except SQLAlchemyError:
        return False


def wait_for_database(url: str, shown_url: str, outage_s: float,
                      sleep: Callable[[float], None] = time.sleep) -> float:
    """Block until the database answers; seconds waited. NasRuntimeError after `outage_s` without it."""
    started = time.monotonic()
    wait = FIRST_WAIT_S
    engine = make_engine(url)
    try:
        while not database_reachable(engine):
            waited = time.monotonic() - started
            if waited >= outage_s:
                raise NasRuntimeError(None, f"the study database {shown_url} has been unreachable for {waited:.0f} s "
                                            f"(limit outage_s = {outage_s:g}); run the same command again to resume")
            console.print(f"study database {shown_url} unreachable; retrying in {wait:.0f} s", markup=False)
            sleep(wait)
            wait = min(wait * 2, MAX_WAIT_S)
    finally:
        engine.dispose()
    return time.monotonic() - started


def connection_error(exc: BaseException) -> BaseException | None:
    """The lost-connection error behind `exc`, or None.

    Optuna wraps some in StorageInternalError (`__cause__`), and when the link breaks while a trial is
    told, Optuna's own clean-up in `_run_trial` fails on the same link and then raises UnboundLocalError:
    the connection error is that one's `__context__`. So both links of the chain are followed.
    """
    seen: BaseException | None = exc
    visited: set[int] = set()
    while seen is not None and id(seen) not in visited:
        if isinstance(seen, (OperationalError, InterfaceError)) or getattr(seen, "connection_invalidated", False):
            return seen
        visited.add(id(seen))
        seen = seen.__cause__ or seen.__context__
    return None


def optimize_through_outages(run: Callable[[float | None], None], fail_orphans: Callable[[str], list[int]], url: str,
                             shown_url: str, outage_s: float, timeout: float | None) -> None:
    """`run(timeout_left)` (one `study.optimize` call) again after each database outage, until it returns.

    `run` is called again with what is left of `timeout`; it must size its own trial count from the
    study (the trials finished before the outage count). Once the database is back, `fail_orphans(reason)`
    fails the trials this worker was running when the link broke and returns their numbers.
    """
    started = time.monotonic()
    while True:
        left = None if timeout is None else timeout - (time.monotonic() - started)
        if left is not None and left <= 0:
            return
        try:
            run(left)
            return
        except Exception as exc:  # whatever Optuna raises once the storage is gone: judged by its chain
            lost = connection_error(exc)
            if lost is None:
                raise
            reason = str(getattr(lost, "orig", None) or lost).strip().splitlines()[0]
            console.print(f"lost the study database {shown_url} ({reason})", markup=False)
            waited = wait_for_database(url, shown_url, outage_s)
            failed = fail_orphans(f"the study database was unreachable for about {waited:.0f} s "
                                  f"during the trial ({reason})")
            console.print(f"study database back after {waited:.0f} s"
                          + (f"; trial(s) {', '.join(map(str, failed))} marked failed" if failed else "")
                          + "; going on", markup=False)
