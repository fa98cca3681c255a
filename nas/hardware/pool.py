"""Device leases in the study's database, so two workers never time on one device at once.

A lease is one row per device in `nas_device_leases`. Taking it is a single conditional UPDATE
(`... WHERE holder IS NULL OR expires_at < now`), which every database serialises: rowcount 1 means
this worker holds the device. Leases are short and expire, so a killed worker's device frees itself
within `lease_s`; a live holder keeps its lease with a heartbeat thread while it uses the device.

Time comes from the database server where there is one (PostgreSQL), so workers on machines with
skewed clocks still agree on expiry; SQLite is one machine, so its clock is this machine's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import (Column, Float, MetaData, String, Table, and_, cast, func,
                        insert, literal, or_, select, update)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from nas.hardware.backend import MeasurementError
from nas.infra.db import create_tables
from nas.hardware.profile import DeviceProfile

_metadata = MetaData()
LEASES = Table(
    "nas_device_leases",
    _metadata,
    Column("device", String(200), primary_key=True),
    Column("holder", String(200), nullable=True),
    Column("acquired_at", Float, nullable=True),  # seconds since the epoch, database clock
    Column("expires_at", Float, nullable=True),
)


def db_now(engine: Engine) -> Any:
    """A SQL expression for "now" in epoch seconds: the server's clock where there is a server."""
    if engine.dialect.name == "postgresql":
        return cast(func.extract("epoch", func.clock_timestamp()), Float)
    return literal(time.time(), Float)


class LeasePool:
    """Acquire, renew and release device leases for one holder (one worker)."""

    def __init__(self, engine: Engine, holder: str):
        self.engine = engine
        self.holder = holder
        create_tables(engine, _metadata, [LEASES])
        self._known: set[str] = set()

    def _ensure_row(self, key: str) -> None:
        """Insert the device's row on first sight; another worker inserting it first is fine."""
        if key in self._known:
            return
        try:
            with self.engine.begin() as conn:
                exists = conn.execute(select(LEASES.c.device).where(LEASES.c.device == key)).first()
                if exists is None:
                    conn.execute(insert(LEASES).values(device=key, holder=None, expires_at=None))
        except IntegrityError:
            pass  # lost the insert race: the row exists, which is all we need
        self._known.add(key)

    def try_acquire(self, key: str, lease_s: float) -> bool:
        """Take the lease if it is free or expired; True when this holder now has it."""
        self._ensure_row(key)
        now = db_now(self.engine)
        stmt = (
            update(LEASES)
            .where(and_(LEASES.c.device == key,
                        or_(LEASES.c.holder.is_(None), LEASES.c.expires_at < now)))
            .values(holder=self.holder, acquired_at=now, expires_at=now + lease_s)
        )
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def renew(self, key: str, lease_s: float) -> bool:
        """Push the expiry out; False when the lease is no longer ours (it expired and was taken)."""
        now = db_now(self.engine)
        stmt = (update(LEASES)
                .where(and_(LEASES.c.device == key, LEASES.c.holder == self.holder))
                .values(expires_at=now + lease_s))
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def release(self, key: str) -> None:
        """Free the device, only if we still hold it (never clear another worker's lease)."""
        stmt = (update(LEASES)
                .where(and_(LEASES.c.device == key, LEASES.c.holder == self.holder))
                .values(holder=None, acquired_at=None, expires_at=None))
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def holders(self, keys: Sequence[str]) -> dict[str, tuple[str, float]]:
        """Current holder and seconds until expiry of each held device (for progress messages)."""
        now = db_now(self.engine)
        stmt = (select(LEASES.c.device, LEASES.c.holder, LEASES.c.expires_at - now)
                .where(and_(LEASES.c.device.in_(list(keys)), LEASES.c.holder.is_not(None))))
        with self.engine.connect() as conn:
            return {row[0]: (row[1], float(row[2] or 0.0)) for row in conn.execute(stmt)}

    def acquire(self, devices: Sequence[DeviceProfile], wait_s: float, poll_s: float,
                progress: Callable[[str], None]) -> DeviceProfile:
        """Lease the first free device in `devices` (in order), polling until `wait_s` runs out."""
        if not devices:
            raise MeasurementError("no device to lease")
        deadline = time.monotonic() + wait_s
        last_note, last_time = "", 0.0
        while True:
            for dev in devices:
                if self.try_acquire(dev.key, dev.lease_s):
                    return dev
            held = self.holders([d.key for d in devices])
            busy = ", ".join(
                f"{d.name} (held by {held[d.key][0]}, lease expires in {max(held[d.key][1], 0):.0f} s)"
                if d.key in held else f"{d.name} (just freed)" for d in devices
            )
            if time.monotonic() >= deadline:
                raise MeasurementError(f"no device became free within {wait_s:g} s: {busy}")
            note = f"waiting for a free device: {busy}"
            # Say it when it changes and every 30 s, not at every poll.
            if note.split(", lease")[0] != last_note or time.monotonic() - last_time > 30:
                progress(note)
                last_note, last_time = note.split(", lease")[0], time.monotonic()
            time.sleep(min(poll_s, max(deadline - time.monotonic(), 0.0)))


class LeaseHeartbeat:
    """Renews one lease every lease_s/4 in a background thread while the device is in use.

    Short leases then suffice however long a measurement takes, so a crashed worker blocks its
    device for at most `lease_s`. `lost` turns true when a renewal finds the lease taken (it had
    expired, e.g. the database was unreachable for longer than `lease_s`).
    """

    def __init__(self, pool: LeasePool, key: str, lease_s: float):
        self.pool, self.key, self.lease_s = pool, key, lease_s
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{key}", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            try:
                if not self.pool.renew(self.key, self.lease_s):
                    self.lost = True
                    return
            except Exception:  # a transient database error: try again at the next beat
                continue

    def __enter__(self) -> LeaseHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
