"""Timers for the emulator, on the event loop's clock or on a manual clock.

The firmware model asks for timers as effects (``StartTimer``); the scheduler runs them.
With a :class:`~firmware_model.clock.ManualClock` nothing happens until a test calls
:meth:`Scheduler.advance`, so tests control time instead of sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable

from firmware_model.clock import Clock, ManualClock


class LoopClock:
    """The running event loop's monotonic clock."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def now(self) -> float:
        return self._loop.time()


class TimerHandle:
    __slots__ = ("_cancelled", "_loop_handle", "deadline")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self._cancelled = False
        self._loop_handle: asyncio.TimerHandle | None = None

    def cancel(self) -> None:
        self._cancelled = True
        if self._loop_handle is not None:
            self._loop_handle.cancel()

    @property
    def cancelled(self) -> bool:
        return self._cancelled


class Scheduler:
    """Runs callbacks at deadlines of the model's clock."""

    def __init__(self, clock: Clock | None, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.clock: Clock = clock if clock is not None else LoopClock(loop)
        self.manual = isinstance(self.clock, ManualClock)
        self._queue: list[tuple[float, int, TimerHandle, Callable[[], None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self.clock.now()

    def now_fn(self) -> Callable[[], float]:
        """The cheapest callable reading this clock (the loop's own ``time`` when possible)."""
        return self._loop.time if isinstance(self.clock, LoopClock) else self.clock.now

    def call_at(self, deadline: float, callback: Callable[[], None]) -> TimerHandle:
        handle = TimerHandle(deadline)
        if self.manual:
            heapq.heappush(self._queue, (deadline, next(self._seq), handle, callback))
        else:
            delay = max(0.0, deadline - self.clock.now())
            handle._loop_handle = self._loop.call_at(self._loop.time() + delay, callback)
        return handle

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> TimerHandle:
        return self.call_at(self.now() + delay_s, callback)

    def pending(self) -> list[float]:
        """Deadlines still waiting (manual clock only)."""
        return sorted(d for d, _, h, _ in self._queue if not h.cancelled)

    async def advance(self, seconds: float) -> None:
        """Move a manual clock forward, running every timer that falls due on the way."""
        if not isinstance(self.clock, ManualClock):
            raise RuntimeError("advance() needs a ManualClock; the loop clock moves by itself")
        target = self.clock.now() + seconds
        while self._queue and self._queue[0][0] <= target:
            deadline, _, handle, callback = heapq.heappop(self._queue)
            if handle.cancelled:
                continue
            self.clock.set(max(deadline, self.clock.now()))
            callback()
            await _settle()
        self.clock.set(target)
        await _settle()

    def cancel_all(self) -> None:
        for _, _, handle, _ in self._queue:
            handle.cancel()
        self._queue.clear()


async def _settle() -> None:
    """Let callbacks and transport writes scheduled by a timer run."""
    for _ in range(5):
        await asyncio.sleep(0)
