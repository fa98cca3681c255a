"""A pool that agrees with itself: each device's reference figures, the rule that judges them, flagged windows.

Scores timed on several devices compare only while the devices agree. Each device of a pool times one
reference model (`nas.hardware.reference`) at a worker's start and every `reference_every` measurements;
every such figure is a row of `nas_reference_figures` in the study's database, so all workers share them. A
figure off by more than the tolerance from the device's own first figure (the first one that agreed, under
the same measurement setup: another governor, thread count or runtime starts afresh) or from the median of
the other devices' latest agreeing figures takes the device out. Its measurements since its last agreeing
reference figure are then suspect: that window is a row of `nas_flagged_figures`, and trial records whose
device and `measure_start` fall in it are flagged (`nas.trial.record.latency_flag_of`).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, and_, inspect, insert, select
from sqlalchemy.engine import Engine

from nas.infra.db import create_tables

_metadata = MetaData()
FIGURES = Table(
    "nas_reference_figures",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device", String(200), nullable=False, index=True),  # the device key
    Column("name", String(200), nullable=False),
    Column("holder", String(200), nullable=False),  # the worker that timed it
    Column("time", String(40), nullable=False),  # ISO 8601, UTC: when the timed runs started
    Column("epoch", Float, nullable=False),  # the same instant in seconds since the epoch (ordering)
    Column("median_ms", Float, nullable=False),
    Column("setup", String(64), nullable=False),  # MeasureSetup.digest()
    Column("fingerprint", Text, nullable=False),  # JSON: LatencyResult.fingerprint()
    Column("verdict", String(8), nullable=False),  # "ok" | "out"
    Column("reason", Text, nullable=True),
)
FLAGGED = Table(
    "nas_flagged_figures",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device", String(200), nullable=False),
    Column("name", String(200), nullable=False),
    Column("since", String(40), nullable=False),  # ISO 8601, UTC
    Column("until", String(40), nullable=False),
    Column("reason", Text, nullable=False),
)

OK, OUT = "ok", "out"
_EPSILON = 1e-9  # "more than the tolerance": a figure exactly at it still agrees, whatever the float rounding


def epoch_of(iso: str) -> float:
    """Seconds since the epoch of an ISO 8601 time with its offset."""
    return datetime.fromisoformat(iso).timestamp()


@dataclass(frozen=True)
class ReferenceFigure:
    """One timing of the reference model on one device, and how it was judged."""

    device: str  # key
    name: str
    holder: str
    time: str
    median_ms: float
    setup: str
    fingerprint: dict[str, Any] = field(default_factory=dict)
    verdict: str = OK
    reason: str | None = None


@dataclass(frozen=True)
class FlaggedWindow:
    """A device's suspect stretch: measurements on it from `since` to `until` (ISO, UTC) are not trusted."""

    device: str
    name: str
    since: str
    until: str
    reason: str

    def covers(self, name: str | None, when: str | None) -> bool:
        """Whether a measurement on the device called `name` that started at `when` (ISO) falls in it."""
        if name != self.name or not when:
            return False
        try:
            return epoch_of(self.since) <= epoch_of(when) <= epoch_of(self.until)
        except ValueError:
            return False


def judge_figure(median_ms: float, first_ms: float | None, pool_ms: float | None, others: int,
                 tolerance: float) -> str | None:
    """Why a reference figure disagrees (off its own first figure, or off the pool's median of `others`
    devices, by more than `tolerance` as a share of that figure), or None when it agrees."""
    checks = ((first_ms, "its first figure"), (pool_ms, f"the pool's median of {others} other device(s)"))
    for against, what in checks:
        if against is None or against <= 0:
            continue
        off = abs(median_ms - against) / against
        if off > tolerance + _EPSILON:
            return (f"reference {median_ms:.2f} ms is {off:.0%} off {what}, {against:.2f} ms "
                    f"(tolerance {tolerance:.0%})")
    return None


def _figure(row: Any) -> ReferenceFigure:
    return ReferenceFigure(device=row.device, name=row.name, holder=row.holder, time=row.time,
                           median_ms=float(row.median_ms), setup=row.setup, fingerprint=json.loads(row.fingerprint),
                           verdict=row.verdict, reason=row.reason)


class Agreement:
    """The reference figures and flagged windows of one study database, and the judging rule."""

    def __init__(self, engine: Engine, tolerance: float = 0.10):
        if not 0 < tolerance < 1:
            raise ValueError(f"tolerance must be between 0 and 1, not {tolerance}")
        self.engine = engine
        self.tolerance = tolerance
        create_tables(engine, _metadata, [FIGURES, FLAGGED])

    def first(self, device: str, setup: str) -> ReferenceFigure | None:
        """The device's first agreeing figure under this setup, or None."""
        stmt = (select(FIGURES).where(and_(FIGURES.c.device == device, FIGURES.c.setup == setup,
                                           FIGURES.c.verdict == OK))
                .order_by(FIGURES.c.epoch, FIGURES.c.id).limit(1))
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else _figure(row)

    def last_ok(self, device: str) -> ReferenceFigure | None:
        """The device's latest agreeing figure (any setup), or None."""
        stmt = (select(FIGURES).where(and_(FIGURES.c.device == device, FIGURES.c.verdict == OK))
                .order_by(FIGURES.c.epoch.desc(), FIGURES.c.id.desc()).limit(1))
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else _figure(row)

    def pool_median(self, excluding: str) -> tuple[float | None, int]:
        """The median over the other devices of each one's latest agreeing figure, and how many there are."""
        latest: dict[str, float] = {}
        stmt = (select(FIGURES.c.device, FIGURES.c.median_ms)
                .where(and_(FIGURES.c.device != excluding, FIGURES.c.verdict == OK))
                .order_by(FIGURES.c.epoch, FIGURES.c.id))
        with self.engine.connect() as conn:
            for device, ms in conn.execute(stmt):
                latest[device] = float(ms)  # later rows overwrite earlier ones
        if not latest:
            return None, 0
        return statistics.median(latest.values()), len(latest)

    def judge(self, device: str, setup: str, median_ms: float) -> str | None:
        """Why this new figure of `device` disagrees, or None (see `judge_figure`)."""
        first = self.first(device, setup)
        pool, others = self.pool_median(device)
        return judge_figure(median_ms, None if first is None else first.median_ms, pool, others, self.tolerance)

    def record(self, figure: ReferenceFigure) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(FIGURES).values(
                device=figure.device, name=figure.name, holder=figure.holder, time=figure.time,
                epoch=epoch_of(figure.time), median_ms=figure.median_ms, setup=figure.setup,
                fingerprint=json.dumps(figure.fingerprint, sort_keys=True), verdict=figure.verdict,
                reason=figure.reason))

    def flag(self, device: str, name: str, since: str, until: str, reason: str) -> FlaggedWindow:
        """Store a suspect window of a device's measurements."""
        window = FlaggedWindow(device=device, name=name, since=since, until=until, reason=reason)
        with self.engine.begin() as conn:
            conn.execute(insert(FLAGGED).values(device=device, name=name, since=since, until=until, reason=reason))
        return window


def read_agreement(engine: Engine) -> tuple[list[ReferenceFigure], list[FlaggedWindow]]:
    """Every reference figure (oldest first) and flagged window of a study database; none where the tables
    were never made (a study without agreement checks, or older)."""
    tables = inspect(engine)
    figures: list[ReferenceFigure] = []
    windows: list[FlaggedWindow] = []
    with engine.connect() as conn:
        if tables.has_table(FIGURES.name):
            figures = [_figure(row) for row in conn.execute(select(FIGURES).order_by(FIGURES.c.epoch, FIGURES.c.id))]
        if tables.has_table(FLAGGED.name):
            windows = [FlaggedWindow(device=r.device, name=r.name, since=r.since, until=r.until, reason=r.reason)
                       for r in conn.execute(select(FLAGGED).order_by(FLAGGED.c.id))]
    return figures, windows
