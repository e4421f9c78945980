"""When background loops run: backoff per failing entry, and sleeps that end early.

:class:`Backoff` spaces the attempts of one outbox or deadline that keeps failing and
says when to give up and park it. :class:`Pacer` is a poller's sleep: the poller sleeps
until its next known due time, at most ``idle`` seconds and at least ``interval``
between passes, and anyone may bring the next pass forward (``wake_in``), e.g. the
runtime when it arms a deadline earlier than any other, or the dispatcher when a publish
failed. An idle system therefore polls every ``idle`` seconds, whatever its history.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

__all__ = ["Backoff", "Pacer"]


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """Exponential delays between attempts, and a limit after which to park."""

    base: float = 1.0
    cap: float = 300.0
    max_attempts: int = 8

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failure (1, 2, 4, ... up to cap)."""
        return min(self.cap, self.base * 2.0 ** max(attempts - 1, 0))

    def exhausted(self, attempts: int) -> bool:
        """Whether ``attempts`` failures are enough to park the entry."""
        return attempts >= self.max_attempts


class Pacer:
    """A sleep between poller passes that others can shorten."""

    def __init__(self, *, interval: float, idle: float) -> None:
        self.interval = interval
        self.idle = max(idle, interval)
        self._until: float | None = None
        self._requested: float | None = None
        self._last_pass = 0.0
        self._changed = asyncio.Event()

    def passed(self) -> None:
        """A pass begins now (the floor of the next one is ``interval`` from here)."""
        self._last_pass = asyncio.get_running_loop().time()

    def wake_in(self, seconds: float) -> None:
        """Run the next pass within ``seconds`` (but not sooner than ``interval`` after
        the last one began)."""
        loop = asyncio.get_running_loop()
        at = max(loop.time() + max(seconds, 0.0), self._last_pass + self.interval)
        if self._until is None:  # a pass is running: the sleep after it takes this
            self._requested = at if self._requested is None else min(self._requested, at)
        elif at < self._until:
            self._until = at
            self._changed.set()

    async def sleep(self, seconds: float) -> None:
        """Sleep about ``seconds`` (kept within ``interval``..``idle`` of the last pass),
        or less if woken; 0 (more work waits) returns at once."""
        if seconds <= 0:
            self._requested = None
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        seconds = min(max(seconds, self.interval - (now - self._last_pass)), self.idle)
        until = now + seconds
        if self._requested is not None:
            until, self._requested = min(until, self._requested), None
        self._until = until
        try:
            while (remaining := self._until - loop.time()) > 0:
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)
        finally:
            self._until = None
