"""Time for the model: a ``Clock`` protocol and a manual clock for tests.

The model never reads the wall clock; callers pass ``now`` in. The emulator adapts the
event loop's clock (``softap_sim.scheduler.LoopClock``); tests advance a
:class:`ManualClock` instead of sleeping (trio's ``MockClock`` idea).
"""

from __future__ import annotations

from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale."""
        ...


class ManualClock:
    """A clock that moves only when told to."""

    __slots__ = ("_now",)

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._now += seconds

    def set(self, when: float) -> None:
        if when < self._now:
            raise ValueError("a clock cannot go backwards")
        self._now = when
