"""Step deadlines that survive restarts: stored with the commit, polled from the store.

Every commit that leaves its saga waiting stores the saga's deadline after it (in the
same insert). The watcher reads passed deadlines in batches: a deadline whose saga has
moved on is cleared (one batched write), a live one goes to the runtime, which resends
the command, times the step out, or parks the saga. Several orchestrator instances may
watch at once: the runtime's causation id makes one of them win and the others'
attempts duplicates.

A deadline whose handling keeps failing (a bug, a saga whose history no longer
replays) is retried with its own backoff and then parked with the reason for an
operator; it never re-fires every poll nor holds up the deadlines behind it. The
watcher sleeps until the earliest armed deadline (at most ``idle`` seconds while there
is none); the runtime wakes it when it arms an earlier one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import structlog

from orchestrator.errors import SagaNotServed, TransientError
from orchestrator.observability import metrics, tracing
from orchestrator.runtime.pacing import Backoff, Pacer

if TYPE_CHECKING:
    from orchestrator.ports import DeadlineStore
    from orchestrator.runtime.engine import SagaRuntime
    from orchestrator.saga.commits import Commit, DueDeadline

__all__ = ["DeadlineWatcher", "WatcherStats"]

log = structlog.get_logger("deadlines")


@dataclass
class WatcherStats:
    """What the watcher did since it started (for operators and tests)."""

    fired: int = 0
    stale: int = 0
    deferred: int = 0
    parked: int = 0
    passes: int = 0
    last_error: str = ""
    parked_ids: list[str] = field(default_factory=list)


class DeadlineWatcher:
    """Polls the store for passed step deadlines."""

    def __init__(
        self,
        *,
        store: DeadlineStore,
        runtime: SagaRuntime,
        clock: Callable[[], datetime],
        interval: float = 0.5,
        idle: float = 30.0,
        batch_size: int = 500,
        backoff: Backoff | None = None,
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.clock = clock
        self.batch_size = batch_size
        self.backoff = backoff or Backoff(max_attempts=5)
        self.pacer = Pacer(interval=interval, idle=idle)
        self.stats = WatcherStats()
        self._full = False

    @property
    def fired(self) -> int:
        """Live deadlines handed to the runtime so far."""
        return self.stats.fired

    @property
    def saga_names(self) -> list[str]:
        """The sagas this watcher's runtime serves (others' deadlines are left alone)."""
        return list(self.runtime.registry.names)

    def armed(self, commit: Commit) -> None:
        """A commit was stored: if it arms a deadline earlier than the next pass, wake
        then (an ``on_stored`` hook of the commit batcher)."""
        if commit.deadline is not None:
            self.pacer.wake_in((commit.deadline - self.clock()).total_seconds())

    async def run_once(self) -> int:
        """Handle one batch of passed deadlines; returns how many were live."""
        self.stats.passes += 1
        now = self.clock()
        due = await self.store.due_deadlines(
            now=now, limit=self.batch_size, saga_names=self.saga_names
        )
        self._full = len(due) >= self.batch_size
        stale = [d.commit_id for d in due if not d.live]
        await self.store.clear_deadlines(stale)
        self.stats.stale += len(stale)
        live = [d for d in due if d.live]
        for deadline in live:
            await self._fire(deadline, now)
        self.stats.fired += len(live)
        return len(live)

    async def _fire(self, deadline: DueDeadline, now: datetime) -> None:
        metrics.observe_deadline(now=self.clock(), deadline=deadline.deadline)
        try:
            with tracing.deadline(deadline):  # tracing: in the trace that armed it
                commit = await self.runtime.on_deadline(deadline)
        except SagaNotServed as e:  # a version another instance serves: look later
            await self._retry_later(deadline, now, e, count=False)
        except TransientError as e:  # store or broker trouble: the next pass retries
            log.warning("deadline_not_handled", saga_id=deadline.saga_id, error=str(e))
        except Exception as e:  # one bad saga must not stop the others' deadlines
            log.exception("deadline_failed", saga_id=deadline.saga_id)
            await self._retry_later(deadline, now, e, count=True)
        else:
            if commit is None:
                # Nothing decided although the stored deadline passed (another instance
                # decided first, or the saga's own deadline is later): look again later.
                await self._retry_later(deadline, now, None, count=True)

    async def _retry_later(
        self, deadline: DueDeadline, now: datetime, error: Exception | None, *, count: bool
    ) -> None:
        attempts = deadline.attempts + (1 if count else 0)
        reason = (
            f"{type(error).__name__}: {error}"[:500]
            if error is not None
            else "the deadline passed but the saga decided nothing"
        )
        self.stats.last_error = reason
        if count and self.backoff.exhausted(attempts):
            await self.store.park_deadline(deadline.commit_id, reason=reason, attempts=attempts)
            self.stats.parked += 1
            self.stats.parked_ids = [*self.stats.parked_ids[-99:], deadline.commit_id]
            log.error("deadline_parked", saga_id=deadline.saga_id, attempts=attempts, reason=reason)
            return
        until = now + timedelta(seconds=self.backoff.delay(max(attempts, 1)))
        await self.store.defer_deadline(
            deadline.commit_id, until=until, attempts=attempts, error=reason
        )
        self.stats.deferred += 1

    async def _next_pass_in(self) -> float:
        if self._full:
            return 0.0
        upcoming = await self.store.next_deadline(saga_names=self.saga_names)
        if upcoming is None:
            return self.pacer.idle
        # Already due (e.g. a superseded deadline not cleared yet): the pacer's
        # interval is the floor, so this never spins.
        return max((upcoming - self.clock()).total_seconds(), 0.001)

    async def run(self) -> None:
        """Poll until cancelled: at the earliest armed deadline (no sooner than
        ``interval``, no later than ``idle`` after the last pass)."""
        while True:
            self.pacer.passed()
            pause = self.pacer.interval
            try:
                await self.run_once()
                pause = await self._next_pass_in()
            except TransientError as e:
                log.warning("deadline_poll_failed", error=str(e))
            except Exception:  # keep watching whatever happened; it is logged
                log.exception("deadline_poll_crashed")
            await self.pacer.sleep(pause)
