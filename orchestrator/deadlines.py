"""Step deadlines that survive restarts: stored with the commit, polled from the store.

Every commit stores the saga's deadline after it. The watcher reads passed deadlines in
batches; a deadline whose saga has moved on is cleared (one batched write), a live one
goes to the runtime, which resends the command, times the step out, or parks the saga.
Several orchestrator instances may watch at once: the runtime's causation id makes one
of them win and the others' attempts duplicates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

import structlog

from orchestrator.errors import TransientError

if TYPE_CHECKING:
    from orchestrator.runtime import SagaRuntime
    from orchestrator.store import SagaStore

__all__ = ["DeadlineWatcher"]

log = structlog.get_logger("deadlines")


class DeadlineWatcher:
    """Polls the store for passed step deadlines."""

    def __init__(
        self,
        *,
        store: SagaStore,
        runtime: SagaRuntime,
        clock: Callable[[], datetime],
        interval: float = 0.5,
        batch_size: int = 500,
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.clock = clock
        self.interval = interval
        self.batch_size = batch_size
        self.fired = 0

    async def run_once(self) -> int:
        """Handle one batch of passed deadlines; returns how many were live."""
        due = await self.store.due_deadlines(now=self.clock(), limit=self.batch_size)
        stale = [d.commit_id for d in due if not d.live]
        live = [d for d in due if d.live]
        await self.store.clear_deadlines(stale)
        for deadline in live:
            try:
                await self.runtime.on_deadline(deadline)
            except TransientError as e:
                log.warning("deadline_not_handled", saga_id=deadline.saga_id, error=str(e))
            except Exception:  # one bad saga must not stop the others' deadlines
                log.exception("deadline_failed", saga_id=deadline.saga_id)
        self.fired += len(live)
        return len(live)

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            try:
                await self.run_once()
            except TransientError as e:
                log.warning("deadline_poll_failed", error=str(e))
            except Exception:  # keep watching whatever happened; it is logged
                log.exception("deadline_poll_crashed")
            await asyncio.sleep(self.interval)
