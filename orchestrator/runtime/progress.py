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
(every service host does this), applying a batch's items in order and acking the
delivery once all of them are applied. A failure retries or dead-letters the whole
batch; the items already applied are applied again, which the read side's per-saga
version guards make a no-op, as for any redelivered progress event.

Upgrading: consumers that know the batch type must run before an orchestrator turns
batching on; an older consumer dead-letters a batch as ``unknown_type`` (nothing is
lost: replay it from the dead-letter queue after the upgrade).
"""

from __future__ import annotations

import asyncio
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
from orchestrator.runtime.batcher import GroupWriter

if TYPE_CHECKING:
    from orchestrator.messaging.envelope import Envelope
    from orchestrator.saga.commits import Commit, OutboxEntry

__all__ = [
    "MAX_BATCH_BYTES",
    "BatchPublisher",
    "ProgressBatcher",
    "is_progress",
    "per_saga",
]

MAX_BATCH_BYTES = 128 * 1024
"""A batch's body stays under this (half the consumers' default ``SAGA_MAX_BODY_BYTES``):
a bigger one is split. One event bigger than that still goes, alone, as today."""

Queued = tuple["Commit", "OutboxEntry"]
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
        self, *, publisher: BatchPublisher, max_batch: int = 100, max_in_flight: int = 2
    ) -> None:
        super().__init__(window=0.0, max_batch=max_batch, max_in_flight=max_in_flight)
        self.publisher = publisher
        self.batched = 0
        """Progress events published inside a batch of two or more."""
        self.messages = 0
        """Messages published for them (batches, and events alone in theirs)."""

    async def publish(self, commit: Commit, entry: OutboxEntry) -> None:
        """Queue one progress event and wait until the broker confirmed it."""
        await self.submit((commit, entry))

    async def write_batch(self, items: Sequence[Queued]) -> Sequence[Exception | None]:
        """One message per saga type (split if too big); a stored body that no longer
        validates fails only its own commit."""
        outcomes: list[Exception | None] = [None] * len(items)
        groups: dict[tuple[str, str], list[tuple[int, SagaProgressedItem]]] = {}
        for i, (commit, entry) in enumerate(items):
            try:
                message = entry.message()
            except Exception as e:  # the relay parks it with the reason
                outcomes[i] = e
                continue
            assert isinstance(message, SagaProgressed)
            item = SagaProgressedItem(saga_id=commit.saga_id, progressed=message)
            groups.setdefault((entry.routing_key, message.saga_name), []).append((i, item))
        for (routing_key, saga_name), group in groups.items():
            for chunk in _chunks(group):
                await self._send(items, routing_key, saga_name, chunk)
        return outcomes

    async def _send(
        self,
        items: Sequence[Queued],
        routing_key: str,
        saga_name: str,
        chunk: list[tuple[int, SagaProgressedItem]],
    ) -> None:
        if len(chunk) == 1:
            commit, entry = items[chunk[0][0]]
            await self.publisher.publish(commit=commit, entry=entry)
        else:
            batch = SagaProgressBatch(saga_name=saga_name, progress=tuple(i for _, i in chunk))
            await self.publisher.publish_batch(
                batch, message_id=f"progress-{uuid.uuid4().hex}", routing_key=routing_key
            )
            self.batched += len(chunk)
        self.messages += 1


def _chunks(
    group: list[tuple[int, SagaProgressedItem]],
) -> list[list[tuple[int, SagaProgressedItem]]]:
    """The group split so that each chunk's body stays under ``MAX_BATCH_BYTES``."""
    if len(group) == 1:
        return [group]
    size = sum(len(encode(item)) + 1 for _, item in group)
    if size <= MAX_BATCH_BYTES:
        return [group]
    half = len(group) // 2
    return _chunks(group[:half]) + _chunks(group[half:])


def per_saga(handler: Handler) -> Handler:
    """``handler`` with each item of a progress batch given to it as a single
    ``SagaProgressed`` envelope of its saga; other messages pass through.

    The items run side by side, as the single events of as many deliveries would (their
    writes share round trips; one after the other, a batch would take a round trip per
    item and fall behind the next batch, whose newer versions would then look like
    gaps). They start in order, so a handler that takes a per-saga lock first applies
    a saga's versions in order. Every item finishes before the delivery is settled;
    then the first failure, in item order, is raised for the whole batch."""

    async def handle(envelope: Envelope) -> None:
        batch = envelope.message
        if not isinstance(batch, SagaProgressBatch):
            await handler(envelope)
            return
        results = await asyncio.gather(
            *(_one(handler, envelope, item) for item in batch.progress), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    return handle


async def _one(handler: Handler, batch: Envelope, item: SagaProgressedItem) -> None:
    """One item of a batch, logged as its saga's (each runs in a task of its own, so
    the binding is its own)."""
    message_id = f"{item.saga_id}:v{item.progressed.version}"
    with structlog.contextvars.bound_contextvars(
        saga_id=item.saga_id, message_id=message_id, message_type=SagaProgressed.TYPE
    ):
        await handler(
            replace(
                batch, message=item.progressed, message_id=message_id, correlation_id=item.saga_id
            )
        )
