"""Latency cache: a model is never timed twice under the same measurement setup.

Keyed by (model key, device key, setup), where the setup is everything that changes a figure
besides the model: threads (the count or the counts timed, and the fixed one), warm-up, runs,
bursts and their gap, runtime version, the runner script's sha256, the board behind the device name
(SSH: its host key fingerprint; local: its CPU model) and the CPU frequency governor. A changed profile, runner or swapped board therefore times again instead of serving
stale figures. The stored record is the full measurement (JSON), so a hit returns the original
figures and timestamps.
The table lives in the study's database so every worker shares it.

Entries of the older, narrower table `nas_latency_cache` are left where they are and never read.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, and_, delete, insert, or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from nas.infra.db import create_tables

_metadata = MetaData()
CACHE = Table(
    "nas_latency_cache_v2",
    _metadata,
    Column("tflite_sha256", String(64), primary_key=True),  # the model key: file sha256 or graph key
    Column("device", String(200), primary_key=True),
    Column("setup", String(64), primary_key=True),  # MeasureSetup.digest()
    # The setup's parts, duplicated out of `record` for ad-hoc queries.
    Column("threads", Integer, nullable=False),
    Column("runtime_version", String(64), nullable=False),
    Column("board", String(200), nullable=False),
    Column("median_ms", Float, nullable=False),
    Column("record", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)


def version_key(version: str | None) -> str:
    """A runtime that hides its version is cached as "unknown"."""
    return version or "unknown"


@dataclass(frozen=True)
class MeasureSetup:
    """Everything besides the model that a latency figure depends on."""

    threads: int | tuple[int, ...]  # the profile's count, or the counts timed
    warmup: int
    runs: int
    runtime_version: str | None
    runner_sha256: str
    board: str | None
    repeats: int = 1
    repeat_gap_s: float = 0.0
    threads_fixed: int | None = None
    # `ondemand` starts a short run at a low clock, `performance` does not: never one entry for both.
    governor: str = "unknown"

    def digest(self) -> str:
        """A fixed-width key of all parts (the key column stays small and indexable)."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


class LatencyCache:
    """Look up and store measurement records in `nas_latency_cache_v2`."""

    def __init__(self, engine: Engine):
        self.engine = engine
        create_tables(engine, _metadata, [CACHE])

    def get(self, key: str, device: str, setup: MeasureSetup) -> dict[str, Any] | None:
        """The stored record for this model, device and setup, or None."""
        stmt = select(CACHE.c.record).where(and_(
            CACHE.c.tflite_sha256 == key, CACHE.c.device == device,
            CACHE.c.setup == setup.digest()))
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else json.loads(row[0])

    def devices_with(self, key: str, setups: Mapping[str, MeasureSetup]) -> set[str]:
        """Which devices (device key -> its current setup) already hold a figure for this model."""
        if not setups:
            return set()
        stmt = select(CACHE.c.device).where(and_(
            CACHE.c.tflite_sha256 == key,
            or_(*(and_(CACHE.c.device == dev, CACHE.c.setup == setup.digest())
                  for dev, setup in setups.items()))))
        with self.engine.connect() as conn:
            return {row[0] for row in conn.execute(stmt)}

    def put(self, key: str, device: str, setup: MeasureSetup, record: dict[str, Any]) -> None:
        """Store a record; if another worker stored the same key first, keep theirs."""
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(CACHE).values(
                    tflite_sha256=key, device=device, setup=setup.digest(),
                    threads=int(record.get("threads") or 0),  # the count whose figures these are
                    runtime_version=version_key(setup.runtime_version),
                    board=(setup.board or "unknown")[:200],
                    median_ms=float(record["median_ms"]), record=json.dumps(record, sort_keys=True),
                    created_at=time.time()))
        except IntegrityError:
            pass

    def forget(self, device: str, since: float, until: float) -> int:
        """Drop a device's entries stored between two times (epoch seconds), so those models are timed again;
        how many were dropped."""
        stmt = delete(CACHE).where(and_(CACHE.c.device == device, CACHE.c.created_at >= since,
                                        CACHE.c.created_at <= until))
        with self.engine.begin() as conn:
            return int(conn.execute(stmt).rowcount or 0)
