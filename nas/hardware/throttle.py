"""Reading the Raspberry Pi firmware's `vcgencmd get_throttled` flags.

Bits 0-3 say what holds *now* (under-voltage, ARM frequency capped, throttled, soft temperature
limit): a figure timed with any of them set is slower than the board really is, so it is not
cached. Bits 16-19 say the same happened *since boot*; they do not make a figure wrong.
"""

from __future__ import annotations

THROTTLE_BITS = {0: "under-voltage", 1: "frequency capped", 2: "throttled", 3: "soft temperature limit"}


def throttled_now(value: str | None) -> list[str]:
    """The "now" conditions set in a `get_throttled` hex string ([] for None or none set).

    An unreadable value counts as a condition: a figure should not be trusted on a guess.
    """
    if value is None:
        return []
    try:
        bits = int(value, 16)
    except ValueError:
        return [f"unreadable throttle flags {value!r}"]
    return [name for bit, name in THROTTLE_BITS.items() if bits & (1 << bit)]


def describe_throttled(value: str | None) -> tuple[bool, str]:
    """(healthy now, readable text) for a `get_throttled` hex string; None means not a Pi."""
    if value is None:
        return True, "not reported (no vcgencmd)"
    try:
        bits = int(value, 16)
    except ValueError:
        return False, f"unreadable: {value!r}"
    now = [name for bit, name in THROTTLE_BITS.items() if bits & (1 << bit)]
    past = [name for bit, name in THROTTLE_BITS.items() if bits & (1 << (bit + 16))]
    if not now and not past:
        return True, f"{value} (none)"
    parts = []
    if now:
        parts.append("now: " + ", ".join(now))
    if past:
        parts.append("since boot: " + ", ".join(past))
    return not now, f"{value} ({'; '.join(parts)})"
