"""Trial figures as a person reads them: rounded, timestamps to the minute, an architecture in one line.

The record (`nas.trial.record`) keeps raw values; these functions only shape what is shown (the trial
note in the dashboard, the report and the final model's page).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from itertools import groupby
from typing import Any


def rounded(value: Any, digits: int = 4) -> str:
    """A figure for display: floats to `digits` significant digits ("140.5", "0.2913"), integers with thousands
    separators, anything else as it is; None as an en dash."""
    if value is None or value == "":
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 10 ** digits else f"{value:,.0f}"
    return str(value)


def when(timestamp: str | datetime | None) -> str:
    """A timestamp as "2026-12-06 14:03 UTC": ISO 8601 text or a datetime, in UTC where it has an offset; naive
    ones are shown as they are (local time) without a zone. Unparseable text is returned unchanged."""
    if timestamp is None or timestamp == "":
        return "–"
    if isinstance(timestamp, str):
        try:
            timestamp = datetime.fromisoformat(timestamp)
        except ValueError:
            return timestamp
    if timestamp.tzinfo is None:
        return f"{timestamp:%Y-%m-%d %H:%M}"
    return f"{timestamp.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC"


def _runs(values: Iterable[Any]) -> str:
    """`concat×4, none`: a per-stage tuple without repeating itself."""
    parts = []
    for value, run in groupby(values):
        n = len(list(run))
        parts.append(f"{value}×{n}" if n > 1 else str(value))
    return ", ".join(parts)


def arch_line(arch: dict[str, Any]) -> str:
    """An architecture in one line a person can compare with the next row's."""
    if not arch:
        return "?"
    parts = [str(arch.get("backbone", "?")), f"{arch.get('depth', '?')} stages",
             "decoder " + "-".join(str(c) for c in arch.get("decoder_channels", ())),
             "skips " + _runs(arch.get("skips", ())), "blocks " + _runs(arch.get("blocks", ()))]
    if arch.get("ffm"):
        parts.append("FFM")
    if arch.get("rfdb_esa"):
        parts.append("ESA")
    parts += [f"{arch.get('upsample', '?')} upsampling", f"scale {arch.get('input_scale', '?')}",
              f"{arch.get('head', '?')} head"]
    return " · ".join(parts)
