"""Progress events of concurrent commits, published together.

Each commit stores one ``saga.progressed`` event in its outbox for the read side. At
50 sagas in flight that is half of what the orchestrator publishes, and the broker
copies each one to every read-side queue. With ``SAGA_PROGRESS_BATCH`` above 1 the
dispatcher hands them to a :class:`ProgressBatcher`: the progress events of the commits
dispatched in the same turn of the event loop (at most that many) go as one
:class:`~contracts.SagaProgressBatch` per saga type, with the same routing key
(``<saga>.progressed``), so the same bindings take it. A progress event alone in its
batch goes as a plain :class:`~contracts.SagaProgressed`, exactly as with batching off.

Nothing else changes for the outbox: a commit is flagged dispatched only when every
message of it, its progress event included, was confirmed. If a batch is not confirmed,
every commit in it stays pending and the relay publishes it again (alone or batched).

Consumers: :func:`per_saga` wraps a handler so that it sees one envelope per saga
(every service host does this, at most its prefetch of handler calls at a time), and
the delivery is acked once every item is applied. If some items fail, the consumer
sends each of them on alone, as its saga's own ``SagaProgressed``, where its own error
sends it (a retry tier, the dead-letter queue) and acks the batch
(``orchestrator.messaging.consumer``): the items applied are not applied again, and
each saga has its own retry budget and its own dead letter. A message of several
commits is not part of any saga's trace.

Upgrading: consumers that know the batch type must run before an orchestrator turns
batching on; an older consumer dead-letters a batch as ``unknown_type`` (nothing is
lost: replay it from the dead-letter queue after the upgrade).
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

import structlog

from contracts import (
    Message,
    SagaProgressBatch,
    SagaProgressed,
    SagaProgressedItem,
    encode,
)
from orchestrator.errors import BrokerUnavailable, TransientError
from orchestrator.runtime.batcher import GroupWriter

if TYPE_CHECKING:
    from orchestrator.messaging.envelope import Envelope
    from orchestrator.saga.commits import Commit, OutboxEntry

__all__ = [
    "MAX_BATCH_BYTES",
    "BatchFailed",
    "BatchPublisher",
    "ProgressBatcher",
    "is_progress",
    "per_saga",
    "single",
]

MAX_BATCH_BYTES = 128 * 1024
"""A batch's body stays under this (half the consumers' default ``SAGA_MAX_BODY_BYTES``):
a bigger one is split. One event bigger than that still goes, alone, as today."""

Queued = tuple["Commit", "OutboxEntry", contextvars.Context]
"""A commit, its progress event and a copy of the context it was dispatched in (its
trace, its log fields)."""
Handler = Callable[["Envelope"], Awaitable[None]]


class BatchPublisher(Protocol):
    """What the batcher publishes through (``AmqpOutboxPublisher``)."""

    async def publish(self, *, commit: Commit, entry: OutboxEntry) -> None: ...

    async def publish_batch(self, batch: Message, *, message_id: str, routing_key: str) -> None: ...


def is_progress(entry: OutboxEntry) -> bool:
    """Whether an outbox entry is a read-side progress event (batched when on)."""
    return entry.kind == "event" and entry.type == SagaProgressed.TYPE


class ProgressBatcher(GroupWriter[Queued]):
    """Publishes queued progress events, one message per saga type and batch.

    ``max_in_flight`` batches may wait for their confirms at once; the events queued
    meanwhile go in the next one, so the batch size follows the load.
    """

    failure_event = "progress_batch_failed"

    def __init__(
        self,
        *,
        publisher: BatchPublisher,
        max_batch: int = 100,
        max_in_flight: int = 2,
        max_bytes: int = MAX_BATCH_BYTES,
    ) -> None:
        super().__init__(window=0.0, max_batch=max_batch, max_in_flight=max_in_flight)
        self.publisher = publisher
        self.max_bytes = max_bytes
        """A batch's body stays under this (split if bigger); at most half the
        consumers' ``SAGA_MAX_BODY_BYTES``, which the orchestrator passes in."""
        self.batched = 0
        """Progress events published inside a batch of two or more."""
        self.messages = 0
        """Messages published for them (batches, and events alone in theirs)."""

    async def publish(self, commit: Commit, entry: OutboxEntry) -> None:
        """Queue one progress event and wait until the broker confirmed it."""
        await self.submit((commit, entry, contextvars.copy_context()))

    async def write_batch(self, items: Sequence[Queued]) -> Sequence[Exception | None]:
        """One message per saga type (split if too big), sent side by side. Each commit
        gets its own outcome: a stored body that no longer validates fails only its
        commit, a message not confirmed (or whose route is gone) only the commits in it."""
        outcomes: list[Exception | None] = [None] * len(items)
        groups: dict[tuple[str, str], list[tuple[int, SagaProgressedItem]]] = {}
        for i, (commit, entry, _) in enumerate(items):
            try:
                item = _item(commit, entry)
            except Exception as e:  # the relay parks it with the reason
                outcomes[i] = e
                continue
            key = (entry.routing_key, item.progressed.saga_name)
            groups.setdefault(key, []).append((i, item))
        chunks = [
            (key, chunk)
            for key, group in groups.items()
            for chunk in _chunks(group, self.max_bytes)
        ]
        results = await asyncio.gather(
            *(self._send(items, key, name, chunk) for (key, name), chunk in chunks),
            return_exceptions=True,
        )
        for (_, chunk), result in zip(chunks, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result  # cancelled: every write of the batch fails
            if isinstance(result, Exception):
                error = (
                    result
                    if isinstance(result, TransientError)
                    else BrokerUnavailable(f"progress not published: {result!r}")
                )
                for i, _ in chunk:
                    outcomes[i] = _own(error)
        return outcomes

    async def _send(
        self,
        items: Sequence[Queued],
        routing_key: str,
        saga_name: str,
        chunk: list[tuple[int, SagaProgressedItem]],
    ) -> None:
        if len(chunk) == 1:
            commit, entry, context = items[chunk[0][0]]
            # Alone: published as with batching off, in its commit's trace and log fields.
            await asyncio.create_task(
                self.publisher.publish(commit=commit, entry=entry), context=context
            )
        else:
            batch = SagaProgressBatch(saga_name=saga_name, progress=tuple(i for _, i in chunk))
            await self.publisher.publish_batch(
                batch, message_id=f"progress-{uuid.uuid4().hex}", routing_key=routing_key
            )
            self.batched += len(chunk)
        self.messages += 1


def _item(commit: Commit, entry: OutboxEntry) -> SagaProgressedItem:
    """The batch item of a stored progress event (its body validated)."""
    message = entry.message()
    if not isinstance(message, SagaProgressed):
        raise TypeError(f"{entry.type} is not a progress event")
    return SagaProgressedItem(saga_id=commit.saga_id, progressed=message)


def _own(error: Exception) -> Exception:
    """A copy of ``error`` for one commit (one object raised in many handlers would
    share its traceback)."""
    try:
        own = copy.copy(error)
    except Exception:  # an exception class that cannot be rebuilt from its args
        own = BrokerUnavailable(str(error))
    own.__cause__ = error
    return own


def _chunks(
    group: list[tuple[int, SagaProgressedItem]], max_bytes: int
) -> list[list[tuple[int, SagaProgressedItem]]]:
    """The group split so that each chunk's body stays under ``max_bytes``."""
    if len(group) == 1:
        return [group]
    size = sum(len(encode(item)) + 1 for _, item in group)
    if size <= max_bytes:
        return [group]
    half = len(group) // 2
    return _chunks(group[:half], max_bytes) + _chunks(group[half:], max_bytes)


class BatchFailed(Exception):
    """Some items of a progress batch failed; the others were applied.

    The consumer sends each failed item on as a single ``SagaProgressed`` (a retry tier
    or the dead-letter queue, by its own error, with the batch's attempt count) and acks
    the batch, so that retries, dead letters and ``saga dlq --saga-id`` work per saga.
    """

    def __init__(self, failures: list[tuple[SagaProgressedItem, Exception]], applied: int):
        self.failures = failures
        self.applied = applied
        first = failures[0][1]
        super().__init__(
            f"{len(failures)} of {len(failures) + applied} progress events failed, "
            f"first {failures[0][0].saga_id}: {first!r}"
        )


def per_saga(
    handler: Handler,
    *,
    limit: int | None = None,
    guard: Callable[[Handler], Handler] | None = None,
) -> Handler:
    """``handler`` with each item of a progress batch given to it as a single
    ``SagaProgressed`` envelope of its saga; other messages pass through.

    The items run side by side, as the single events of as many deliveries would (their
    writes share round trips; one after the other, a batch would take a round trip per
    item and fall behind the next batch, whose newer versions would then look like
    gaps), at most ``limit`` handler calls at a time across all deliveries (the
    consumer's prefetch: as many as without batches; more would queue writes long
    enough to outlast the read side's leases). They start in order, so a handler that
    takes a per-saga lock first applies a saga's versions in order. Every item finishes
    before the delivery is settled; if some failed, :class:`BatchFailed` says which.

    ``guard`` (the consumer's ``StoreGate.guard``) holds each item on its own while the
    store does not answer, outside the limit, so that an outage is a pause for every
    item of a batch, not failures to retry; a single message is guarded by the consumer."""
    gate = asyncio.Semaphore(limit) if limit else None

    async def run(envelope: Envelope) -> None:
        if gate is None:
            await handler(envelope)
            return
        async with gate:
            await handler(envelope)

    item_run = run if guard is None else guard(run)

    async def handle(envelope: Envelope) -> None:
        batch = envelope.message
        if not isinstance(batch, SagaProgressBatch):
            await run(envelope)
            return
        results = await asyncio.gather(
            *(_one(item_run, envelope, item) for item in batch.progress), return_exceptions=True
        )
        failures: list[tuple[SagaProgressedItem, Exception]] = []
        for item, result in zip(batch.progress, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result
            if isinstance(result, Exception):
                failures.append((item, result))
        if failures:
            raise BatchFailed(failures, applied=len(results) - len(failures))

    return handle


def single(item: SagaProgressedItem) -> tuple[SagaProgressed, str]:
    """An item as the single event it stands for, and that event's message id."""
    return item.progressed, f"{item.saga_id}:v{item.progressed.version}"


async def _one(handler: Handler, batch: Envelope, item: SagaProgressedItem) -> None:
    """One item of a batch, logged as its saga's (each runs in a task of its own, so
    the binding is its own)."""
    _, message_id = single(item)
    with structlog.contextvars.bound_contextvars(
        saga_id=item.saga_id, message_id=message_id, message_type=SagaProgressed.TYPE
    ):
        await handler(
            replace(
                batch, message=item.progressed, message_id=message_id, correlation_id=item.saga_id
            )
        )
