"""Latency cache: a model file is never timed twice on the same device, threads and runtime.

Keyed by (tflite sha256, device key, threads, runtime version): the same bytes on the same device
with the same runtime give the same latency up to noise, so timing again only costs device time.
The stored record is the full measurement (JSON), so a hit returns the original figures and
timestamps. The table lives in the study's database so every worker shares it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, and_, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from nas.hardware.pool import create_tables

_metadata = MetaData()
CACHE = Table(
    "nas_latency_cache",
    _metadata,
    Column("tflite_sha256", String(64), primary_key=True),
    Column("device", String(200), primary_key=True),
    Column("threads", Integer, primary_key=True),
    Column("runtime_version", String(64), primary_key=True),
    Column("median_ms", Float, nullable=False),  # duplicated out of `record` for ad-hoc queries
    Column("record", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)


def version_key(version: str | None) -> str:
    """The key column cannot be NULL; a runtime that hides its version is cached as "unknown"."""
    return version or "unknown"


class LatencyCache:
    """Look up and store measurement records in `nas_latency_cache`."""

    def __init__(self, engine: Engine):
        self.engine = engine
        create_tables(engine, _metadata, [CACHE])

    def get(self, sha256: str, device: str, threads: int, runtime_version: str | None
            ) -> dict[str, Any] | None:
        """The stored record for this key, or None."""
        stmt = select(CACHE.c.record).where(and_(
            CACHE.c.tflite_sha256 == sha256, CACHE.c.device == device,
            CACHE.c.threads == threads, CACHE.c.runtime_version == version_key(runtime_version)))
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else json.loads(row[0])

    def devices_with(self, sha256: str, devices: Sequence[str]) -> set[str]:
        """Which of `devices` already hold a figure for this file (they are leased first)."""
        stmt = select(CACHE.c.device).where(and_(CACHE.c.tflite_sha256 == sha256,
                                                 CACHE.c.device.in_(list(devices))))
        with self.engine.connect() as conn:
            return {row[0] for row in conn.execute(stmt)}

    def put(self, sha256: str, device: str, threads: int, runtime_version: str | None,
            record: dict[str, Any]) -> None:
        """Store a record; if another worker stored the same key first, keep theirs."""
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(CACHE).values(
                    tflite_sha256=sha256, device=device, threads=threads,
                    runtime_version=version_key(runtime_version),
                    median_ms=float(record["median_ms"]), record=json.dumps(record, sort_keys=True),
                    created_at=time.time()))
        except IntegrityError:
            pass
