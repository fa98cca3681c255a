"""The report's Devices section: complete trials grouped by the device that timed them, and the pool's
reference figures (`nas.hardware.agreement`) read from the study database."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial

from nas.hardware.agreement import FlaggedWindow, ReferenceFigure, read_agreement
from nas.infra.db import make_engine
from nas.trial.record import attrs, latency_fingerprint_of, latency_flag_of, latency_of


@dataclass(frozen=True)
class DeviceRow:
    """One device's share of the study's complete trials."""

    device: str
    trials: int
    median_latency_ms: float | None
    flagged: int  # trials whose figure falls in one of the device's flagged windows
    fingerprint: dict[str, Any] = field(default_factory=dict)  # of the device's latest measurement


def device_rows(trials: Iterable[FrozenTrial], windows: list[FlaggedWindow]) -> list[DeviceRow]:
    """Complete trials with a latency, grouped by device (by name), in name order."""
    groups: dict[str, list[FrozenTrial]] = {}
    for t in trials:
        if latency_of(t) is not None:
            groups.setdefault(str(attrs(t).get("device") or "?"), []).append(t)
    rows = []
    for name in sorted(groups):
        group = groups[name]
        latest = max(group, key=lambda t: str(attrs(t).get("measure_start") or ""))
        rows.append(DeviceRow(device=name, trials=len(group),
                              median_latency_ms=statistics.median(latency_of(t) for t in group),
                              flagged=sum(latency_flag_of(t, windows) is not None for t in group),
                              fingerprint=latency_fingerprint_of(latest)))
    return rows


def read_reference(storage_url: str) -> tuple[list[ReferenceFigure], list[FlaggedWindow]]:
    """The study database's reference figures and flagged windows (none for a study that never checked)."""
    engine = make_engine(storage_url)
    try:
        return read_agreement(engine)
    finally:
        engine.dispose()
