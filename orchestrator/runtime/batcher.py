"""Group commit: the writes of concurrent handlers share store round trips.

:class:`CommitBatcher` sits in front of the saga store. A handler's ``append`` queues its
commit and waits for its own outcome; the batcher sends what is queued as one
``append_many`` (``insert_many(ordered=False)``): at once when ``max_batch`` commits are
waiting, else after ``window`` seconds (0: as soon as the handlers that are ready in this
turn of the event loop have queued theirs). While ``max_in_flight`` batches are being
written, new commits wait and go in the next batch, so the batch size follows the load
with no delay at low load. Each handler gets its own commit's result: stored, or the
``DuplicateMessage`` / ``ConcurrencyConflict`` / ``MalformedMessage`` that commit alone
raised; if the store fails the whole round trip, every handler of the batch gets
``StoreUnavailable`` and none of their messages is acked. A crash with a batch half
filled loses nothing: its messages are unacked and come back. A commit whose handler
was cancelled while it waited in the queue is not sent.

The scheduling is :class:`GroupWriter`'s, which the participants' and the read side's
document writes share (``orchestrator.store.writes``).

:class:`Bookkeeper` batches the bookkeeping writes that may lag behind: outboxes flagged
dispatched, and deadlines superseded by a saga's next commit. Losing them (a crash)
only costs a harmless republish by the relay or a stale deadline the watcher clears.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import structlog

from orchestrator.errors import StoreUnavailable, TransientError

if TYPE_CHECKING:
    from orchestrator.ports import DeadlineStore, OutboxStore, SagaStore
    from orchestrator.saga.commits import Commit
    from orchestrator.saga.state import SagaState

__all__ = ["Bookkeeper", "CommitBatcher", "GroupWriter"]

log = structlog.get_logger("batcher")

StoredHook = Callable[["Commit"], None]
T = TypeVar("T")


class Bookkeeper:
    """Lazy, batched ``mark_dispatched`` and ``clear_deadlines``."""

    def __init__(
        self,
        *,
        outbox: OutboxStore,
        deadlines: DeadlineStore | None = None,
        flush_interval: float = 0.05,
        batch_size: int = 500,
    ) -> None:
        self.outbox = outbox
        self.deadlines = deadlines
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self._dispatched: list[str] = []
        self._superseded: list[str] = []
        self._waiting = asyncio.Event()

    @property
    def pending(self) -> int:
        """Flags not written yet."""
        return len(self._dispatched) + len(self._superseded)

    def dispatched(self, commit_id: str) -> None:
        """This commit's outbox was confirmed by the broker."""
        self._dispatched.append(commit_id)
        self._waiting.set()

    def superseded(self, commit_id: str) -> None:
        """The saga moved past this commit: its deadline no longer applies."""
        self._superseded.append(commit_id)
        self._waiting.set()

    def full(self) -> bool:
        """Whether enough is pending to write now."""
        return self.pending >= self.batch_size

    async def flush(self) -> None:
        """Write everything pending (two updates at most, side by side)."""
        dispatched, self._dispatched = self._dispatched, []
        superseded, self._superseded = self._superseded, []
        self._waiting.clear()
        writes = [self.outbox.mark_dispatched(dispatched)]
        if self.deadlines is not None:
            writes.append(self.deadlines.clear_deadlines(superseded))
        results = await asyncio.gather(*writes, return_exceptions=True)
        for result in results:
            if isinstance(result, TransientError):
                # Unflagged outboxes are published again by the relay (harmless
                # duplicates); uncleared deadlines are found stale by the watcher.
                log.warning("bookkeeping_failed", error=str(result))
            elif isinstance(result, BaseException):
                raise result

    async def run(self) -> None:
        """Flush a moment after work arrives (sleeping while there is none) until
        cancelled, then once more."""
        try:
            while True:
                await self._waiting.wait()
                if not self.full():
                    await asyncio.sleep(self.flush_interval)
                await self.flush()
        finally:
            if self.pending:
                await asyncio.shield(self.flush())


class GroupWriter(Generic[T]):
    """Coalesces the writes of concurrent handlers into shared round trips.

    A handler's :meth:`submit` queues its write and waits for its own outcome. What is
    queued goes to :meth:`write_batch` at once when ``max_batch`` writes are waiting, else
    after ``window`` seconds (0: as soon as the handlers that are ready in this turn of
    the event loop have queued theirs). While ``max_in_flight`` batches are being
    written, new writes wait and go in the next batch, so the batch size follows the
    load with no delay at low load. ``write_batch`` returns each write's own outcome (None:
    stored, or the exception that write alone raises); if it raises, the round trip
    failed and every write of the batch fails with ``StoreUnavailable``.
    """

    failure_event = "write_batch_failed"
    """The log event of a failed round trip."""

    def __init__(
        self, *, window: float = 0.0, max_batch: int = 100, max_in_flight: int = 1
    ) -> None:
        self.window = window
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.batches = 0
        self._queue: list[tuple[T, asyncio.Future[None]]] = []
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._in_flight: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> None:
        """Queue one write and wait until it is stored (or refused)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._schedule()
        await future

    async def write_batch(self, items: Sequence[T]) -> Sequence[Exception | None]:
        """Write the items in one round trip; each one's outcome."""
        raise NotImplementedError

    def stored(self, item: T) -> None:
        """Called for each item once it is stored (before its handler resumes)."""

    def _schedule(self) -> None:
        if len(self._in_flight) >= self.max_in_flight:
            return  # the batch in flight starts the next one when it is done
        if len(self._queue) >= self.max_batch:
            self._cancel_timer()
            self._start()
        elif self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = (
                loop.call_later(self.window, self._fire)
                if self.window > 0
                else loop.call_soon(self._fire)
            )

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        if self._queue and len(self._in_flight) < self.max_in_flight:
            self._start()

    def _start(self) -> None:
        # A write whose caller gave up while it waited (cancelled) is not sent: its
        # caller's message was not acked and comes back; sent late, it could land after
        # the redelivery has done the same work elsewhere (a counter's mark removed).
        self._queue = [(item, future) for item, future in self._queue if not future.done()]
        if not self._queue:
            return
        batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
        # A context of its own: the batch serves many messages, so its logs must not
        # carry the saga id and message id of the handler that happened to start it;
        # they keep the process's service name.
        context = contextvars.Context()
        service = structlog.contextvars.get_contextvars().get("service")
        if service is not None:
            context.run(structlog.contextvars.bind_contextvars, service=service)
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._write(batch), context=context)
        self._in_flight.add(task)
        task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if self._queue:
            self._schedule()

    async def _write(self, batch: list[tuple[T, asyncio.Future[None]]]) -> None:
        items = [item for item, _ in batch]
        try:
            outcomes = await self.write_batch(items)
        except Exception as e:  # the round trip failed: every write of it fails
            error = e if isinstance(e, TransientError) else StoreUnavailable(repr(e))
            log.warning(self.failure_event, writes=len(items), error=str(error))
            _fail_all(batch, error)
            return
        except BaseException:  # cancelled: nobody may wait for it forever
            _fail_all(batch, StoreUnavailable("the write was cancelled (service stopping)"))
            raise
        self.batches += 1
        for (item, future), outcome in zip(batch, outcomes, strict=True):
            if outcome is None:
                self.stored(item)
            if future.done():  # its handler was cancelled (service stopping)
                continue
            if outcome is None:
                future.set_result(None)
            else:
                future.set_exception(outcome)


def _fail_all(batch: Sequence[tuple[Any, asyncio.Future[None]]], error: Exception) -> None:
    """Fail every write of the batch still awaited, each with its own copy of ``error``
    (one object raised in many handlers would share its traceback and context)."""
    for _, future in batch:
        if not future.done():
            try:
                own = copy.copy(error)
            except Exception:  # an exception class that cannot be rebuilt from its args
                own = StoreUnavailable(str(error))
            own.__cause__ = error
            future.set_exception(own)


class CommitBatcher(GroupWriter["Commit"]):
    """A :class:`~orchestrator.ports.SagaStore` that groups appends (reads pass through).

    ``on_stored`` hooks see every commit once it is stored (e.g. to wake the deadline
    watcher); the bookkeeper, if given, learns which earlier deadlines were superseded.
    """

    failure_event = "commit_batch_failed"

    def __init__(
        self,
        *,
        store: SagaStore,
        window: float = 0.0,
        max_batch: int = 100,
        max_in_flight: int = 1,
        bookkeeper: Bookkeeper | None = None,
    ) -> None:
        super().__init__(window=window, max_batch=max_batch, max_in_flight=max_in_flight)
        self.store = store
        self.bookkeeper = bookkeeper
        self.on_stored: list[StoredHook] = []
        self.appended = 0

    async def load(self, saga_id: str) -> SagaState:
        """Replay the saga from the store."""
        return await self.store.load(saga_id)

    async def history(self, saga_id: str) -> list[Commit]:
        """The saga's commits, from the store."""
        return await self.store.history(saga_id)

    async def pruned(self, saga_id: str) -> bool:
        """Whether retention removed the saga, from the store."""
        return await self.store.pruned(saga_id)

    async def has_pruned(self) -> bool:
        """Whether retention ever removed a saga, from the store."""
        return await self.store.has_pruned()

    async def append(self, commit: Commit) -> None:
        """Queue the commit and wait until it is stored (or refused)."""
        await self.submit(commit)

    async def append_many(self, commits: Sequence[Commit]) -> list[Exception | None]:
        """Append several at once; each its own outcome."""
        results = await asyncio.gather(*(self.append(c) for c in commits), return_exceptions=True)
        outcomes: list[Exception | None] = []
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result
            outcomes.append(result)
        return outcomes

    async def write_batch(self, items: Sequence[Commit]) -> Sequence[Exception | None]:
        """One ``append_many`` of the store."""
        return await self.store.append_many(items)

    def stored(self, item: Commit) -> None:
        """Count it, supersede the deadline of its saga's previous commit, run the hooks."""
        self.appended += 1
        if self.bookkeeper is not None and item.version > 1:
            self.bookkeeper.superseded(f"{item.saga_id}:{item.version - 1}")
        for hook in self.on_stored:
            hook(item)
