"""A sustained-load run in words: the runner's `sustained` object (`hardware/runner.py`) as one line, and the
warning it deserves.

A burst figure is what a cool device does; minutes of work heat a passively cooled board until it throttles.
`nas finalize` times the shipped model under sustained load, a search its top trials when `sustained_top` asks;
both print the line below, and the warning when the last stretch is much slower or the board throttles.
"""

from __future__ import annotations

from typing import Any

from nas.hardware.throttle import describe_throttled

SLOWER = 1.10  # a last stretch slower than the first by more than this factor is a warning


def temperatures(run: dict[str, Any]) -> list[float]:
    """The readable temperatures of a run's samples ([seconds, °C, kHz, median ms]), in time order."""
    return [float(s[1]) for s in run.get("samples") or [] if len(s) > 1 and s[1] is not None]


def summary(run: dict[str, Any]) -> str:
    """One line: length, invokes, first against last stretch, temperature start to end, throttling at the end."""
    slow = run.get("slowdown")
    temps = temperatures(run)
    heat = (f"{temps[0]:.1f} → {temps[-1]:.1f} °C (max {max(temps):.1f})" if temps
            else "temperature unreadable")
    _, throttle = describe_throttled(run.get("throttled_end"))
    return (f"{run.get('seconds', 0):g} s of sustained load, {run.get('invokes', 0)} invokes: median "
            f"{run.get('first_median_ms', 0):.2f} ms in the first {run.get('stretch_s', 0):g} s, "
            f"{run.get('last_median_ms', 0):.2f} ms in the last"
            + (f" (×{slow:.2f})" if slow is not None else "") + f"; {heat}; throttling at the end: {throttle}")


def warning(run: dict[str, Any]) -> str | None:
    """Why the figures under load deserve a warning (throttled at the end, last stretch > 10 % slower); None
    when they do not."""
    ok_end, throttle = describe_throttled(run.get("throttled_end"))
    if not ok_end:
        return (f"throttled at the end of {run.get('seconds', 0):g} s of sustained load ({throttle}): the device "
                "slows down under continuous work; cool it better (heatsink, fan)")
    slow = run.get("slowdown")
    if slow is not None and slow > SLOWER:
        return (f"the last {run.get('stretch_s', 0):g} s of sustained load ran {slow - 1:.0%} slower than the first "
                f"({run.get('first_median_ms', 0):.2f} → {run.get('last_median_ms', 0):.2f} ms): the device does "
                "not hold its burst figure under continuous work")
    return None
