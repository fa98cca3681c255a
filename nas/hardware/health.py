"""Unhealthy marks that expire, so one outage (a Pi rebooting) does not end a device for good.

A device that fails in a way a retry does not fix (unreachable, authentication, no runtime) is
marked with the reason for its profile's `unhealthy_s`; once that passes, the mark is dropped and
the device is probed again as if first seen.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class HealthMarks:
    """Device key -> (reason, expiry), read through a clock that tests can replace."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._marks: dict[str, tuple[str, float]] = {}

    def mark(self, key: str, reason: str, for_s: float) -> None:
        """Mark a device unhealthy for `for_s` seconds from now."""
        self._marks[key] = (reason, self.clock() + for_s)

    def expire(self) -> list[str]:
        """Drop marks whose time is over; return their device keys (to be probed afresh)."""
        now = self.clock()
        gone = [key for key, (_, until) in self._marks.items() if until <= now]
        for key in gone:
            del self._marks[key]
        return gone

    def reason(self, key: str) -> str | None:
        """Why the device is marked, or None if it is not (or no longer) marked."""
        mark = self._marks.get(key)
        if mark is None or mark[1] <= self.clock():
            return None
        return mark[0]

    def active(self) -> dict[str, str]:
        """Device key -> reason, for every mark still in force."""
        now = self.clock()
        return {key: why for key, (why, until) in self._marks.items() if until > now}

    def seconds_left(self, key: str) -> float:
        """How long the mark on a device still holds (0 when unmarked)."""
        mark = self._marks.get(key)
        return 0.0 if mark is None else max(mark[1] - self.clock(), 0.0)
