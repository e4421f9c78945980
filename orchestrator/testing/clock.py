"""A clock the test moves: the runtime reads it, the kit advances it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = ["START", "FakeClock"]

START = datetime(2030, 1, 1, tzinfo=UTC)
"""Where every fake clock starts, unless told otherwise: far from any real date."""


class FakeClock:
    """Callable like ``orchestrator.runtime.engine.utcnow``; time passes only when told."""

    def __init__(self, *, start: datetime = START) -> None:
        if start.tzinfo is None:
            raise ValueError("the fake clock needs a timezone-aware start (e.g. tzinfo=UTC)")
        self._now = start

    def __call__(self) -> datetime:
        return self._now

    @property
    def now(self) -> datetime:
        """The current fake time."""
        return self._now

    def advance(self, seconds: float) -> datetime:
        """Move the clock forward by ``seconds``; returns the new time."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        self._now += timedelta(seconds=seconds)
        return self._now

    def set(self, moment: datetime) -> None:
        """Move the clock to ``moment`` (never backwards)."""
        if moment < self._now:
            raise ValueError(f"time only moves forward ({moment} is before {self._now})")
        self._now = moment
