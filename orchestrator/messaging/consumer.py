"""A work-queue consumer: ack after the handler stored its effect, retry tiers, dead letters.

The three kinds of failure are kept apart here:

* the handler returns: ack (a business refusal is a normal reply, sent by the handler);
* the handler raises ``MalformedMessage``, or the message cannot be read: dead-letter
  queue at once, with the reason in ``x-error-reason``;
* the handler raises anything else: a copy goes to the next retry tier (a TTL queue that
  dead-letters back to the work queue), and after the last attempt to the dead-letter
  queue with the error, the attempt count and the original routing in its headers;
* the handler raises ``Deferred`` (the message is for another instance, e.g. a saga of
  a version only a newer orchestrator serves during a rolling deploy): a copy goes
  round the first retry tier with its attempt count unchanged, so that any consumer of
  the queue may take it next time. ``x-deferrals`` counts the rounds; after
  ``SAGA_MAX_DEFERRALS`` of them (half an hour by default) no instance is coming for it
  and it is dead-lettered as ``not_served``;
* the handler raises while the store does not answer (an election, an outage): the
  message is held and run again when the store is back, its attempt not counted
  (``orchestrator.messaging.outage``).

A consumer never crashes on a message: every path ends in ack, or, if even the retry
copy cannot be published, in a requeue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from contracts import MalformedMessage
from orchestrator.errors import Deferred
from orchestrator.messaging.envelope import (
    ATTEMPT,
    Envelope,
    build_message,
    copy_message,
    header_int,
    read_envelope,
)
from orchestrator.observability import metrics, tracing
from orchestrator.runtime.progress import BatchFailed, single

if TYPE_CHECKING:
    import aio_pika
    from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel

    from orchestrator.messaging.bus import Bus
    from orchestrator.messaging.outage import StoreGate
    from orchestrator.messaging.topology import WorkQueue

__all__ = ["Consumer", "Handler", "dead_letter_headers"]

Handler = Callable[[Envelope], Awaitable[None]]

log = structlog.get_logger("consumer")

ERROR_MESSAGE_LIMIT = 1000
BATCH_ONLY = frozenset(
    {"traceparent", "tracestate", "x-delivery-count", "x-replayed-at", "x-replay-count"}
)
"""Headers of a progress batch that its failed items' copies do not inherit."""
DEFERRALS = "x-deferrals"


def dead_letter_headers(
    raw: AbstractIncomingMessage, *, queue: str, attempt: int, error: BaseException, reason: str
) -> dict[str, Any]:
    """Headers of a copy going to a retry tier or a dead-letter queue.

    The original exchange and routing key and the first failure time are kept from the
    first failure on; the rest describe the latest one.
    """
    headers = dict(raw.headers or {})
    now = datetime.now(UTC).isoformat()
    headers.setdefault("x-original-exchange", raw.exchange or "")
    headers.setdefault("x-original-routing-key", raw.routing_key or "")
    headers.setdefault("x-first-failure-at", now)
    headers.update(
        {
            "x-queue": queue,
            ATTEMPT: attempt,
            "x-last-failure-at": now,
            "x-error-type": type(error).__name__,
            "x-error-message": str(error)[:ERROR_MESSAGE_LIMIT],
            "x-error-reason": reason,
        }
    )
    headers.pop("x-death", None)  # the broker's own bookkeeping; it grows on every hop
    return headers


class Consumer:
    """Consumes one work queue with one handler."""

    def __init__(
        self,
        *,
        bus: Bus,
        queue: WorkQueue,
        handler: Handler,
        prefetch: int = 32,
        max_body_bytes: int = 256 * 1024,
        max_deferrals: int = 1800,
        store_gate: StoreGate | None = None,
    ) -> None:
        self.bus = bus
        self.queue = queue
        self.handler = handler
        self.prefetch = prefetch
        self.max_body_bytes = max_body_bytes
        self.max_deferrals = max_deferrals
        self.store_gate = store_gate
        self._channel: AbstractRobustChannel | None = None
        self._tag: str | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self.redelivered = 0
        """Deliveries the broker flagged as redelivered (after a consumer, channel or
        broker node was lost with them unacked)."""

    @property
    def consuming(self) -> bool:
        """Started, and its channel is open."""
        return self._tag is not None and self._channel is not None and not self._channel.is_closed

    async def start(self) -> None:
        """Begin consuming."""
        self._channel = await self.bus.consumer_channel(prefetch=self.prefetch)
        queue = await self.bus.queue(self._channel, self.queue.name)
        self._tag = await queue.consume(self._on_message)

    async def stop(self) -> None:
        """Stop taking messages, let those in hand finish, close the channel."""
        if self._channel is None:
            return
        channel, self._channel = self._channel, None
        if self._tag is not None and not channel.is_closed:
            queue = await self.bus.queue(channel, self.queue.name)
            await queue.cancel(self._tag)
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        if not channel.is_closed:
            await channel.close()

    def abort(self) -> None:
        """Drop work in hand without acking it (a crash): the broker redelivers it."""
        for task in list(self._inflight):
            task.cancel()
        self._channel = None

    async def _on_message(self, raw: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            await self._process(raw)
        finally:
            if task is not None:
                self._inflight.discard(task)

    async def _process(self, raw: AbstractIncomingMessage) -> None:
        if raw.redelivered:
            self.redelivered += 1
        attempt = _attempt(raw)
        try:
            envelope = read_envelope(raw, max_body_bytes=self.max_body_bytes)
        except MalformedMessage as e:
            await self._dead_letter(raw, attempt, e, e.reason)
            return
        except Exception as e:  # whatever else cannot be read must not wedge the queue
            await self._dead_letter(raw, attempt, e, "undecodable")
            return
        with (
            structlog.contextvars.bound_contextvars(
                saga_id=envelope.correlation_id,
                message_id=envelope.message_id,
                message_type=envelope.message.TYPE,
                attempt=attempt,
            ),
            metrics.handling(self.queue.name),
        ):
            gate = self.store_gate
            run = self.handler if gate is None else gate.guard(self.handler)
            try:
                with tracing.consuming(self.queue.name, envelope):  # tracing: consumer span
                    await run(envelope)
            except BatchFailed as e:
                await self._split(raw, attempt, e)
            except MalformedMessage as e:
                await self._dead_letter(raw, attempt, e, e.reason)
            except Deferred as e:
                await self._defer(raw, attempt, e)
            except Exception as e:
                await self._retry(raw, attempt, e)
            else:
                await self._settle(raw, ack=True)

    async def _retry(self, raw: AbstractIncomingMessage, attempt: int, error: Exception) -> None:
        await self._forward(raw, *self._retry_to(raw, attempt, error))

    def _retry_to(
        self, raw: AbstractIncomingMessage, attempt: int, error: Exception
    ) -> tuple[str, dict[str, Any]]:
        """The next retry tier and the copy's headers (the dead-letter queue after the
        last attempt)."""
        if attempt >= self.queue.max_attempts:
            return self._dead_letter_to(raw, attempt, error, "retries_exhausted")
        tier = min(attempt - 1, len(self.queue.retry_delays) - 1)
        target = self.queue.retry_queue(tier)
        headers = dead_letter_headers(
            raw, queue=self.queue.name, attempt=attempt + 1, error=error, reason="transient"
        )
        log.warning(
            "message_retry_scheduled",
            queue=self.queue.name,
            retry_queue=target,
            next_attempt=attempt + 1,
            error=repr(error),
        )
        metrics.retried(self.queue.name, error)
        return target, headers

    async def _defer(self, raw: AbstractIncomingMessage, attempt: int, error: Deferred) -> None:
        await self._forward(raw, *self._defer_to(raw, attempt, error))

    def _defer_to(
        self, raw: AbstractIncomingMessage, attempt: int, error: Deferred
    ) -> tuple[str, dict[str, Any]]:
        """Round the first retry tier, attempt not counted: another consumer may take it.
        After ``max_deferrals`` rounds no instance is going to: dead-letter it."""
        rounds = header_int((raw.headers or {}).get(DEFERRALS), 0) + 1
        if rounds > self.max_deferrals:
            return self._dead_letter_to(raw, attempt, error, "not_served")
        headers = dead_letter_headers(
            raw, queue=self.queue.name, attempt=attempt, error=error, reason="deferred"
        )
        headers[DEFERRALS] = rounds
        log.info("message_deferred", queue=self.queue.name, deferrals=headers[DEFERRALS])
        metrics.note_outcome("deferred")
        return self.queue.retry_queue(0), headers

    async def _dead_letter(
        self, raw: AbstractIncomingMessage, attempt: int, error: BaseException, reason: str
    ) -> None:
        await self._forward(raw, *self._dead_letter_to(raw, attempt, error, reason))

    def _dead_letter_to(
        self,
        raw: AbstractIncomingMessage,
        attempt: int,
        error: BaseException,
        reason: str,
        *,
        message: tuple[str | None, str | None] | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """The dead-letter queue and the copy's headers; ``message`` (id, type) names
        the copy when it is not ``raw`` (an item of a progress batch)."""
        headers = dead_letter_headers(
            raw, queue=self.queue.name, attempt=attempt, error=error, reason=reason
        )
        message_id, message_type = message or (raw.message_id, raw.type)
        log.error(
            "message_dead_lettered",
            queue=self.queue.name,
            dlq=self.queue.dlq,
            reason=reason,
            error=str(error)[:ERROR_MESSAGE_LIMIT],
            message_id=message_id,
            message_type=message_type,
        )
        metrics.dead_lettered(self.queue.name, reason)
        return self.queue.dlq, headers

    async def _split(self, raw: AbstractIncomingMessage, attempt: int, failed: BatchFailed) -> None:
        """A progress batch of which some items failed: each failed item goes on alone,
        as the single event it stands for, where its own error sends it (a retry tier
        with the batch's next attempt, or the dead-letter queue), then the batch is
        acked. If a copy cannot be published the batch is requeued: its items are
        applied again, which changes nothing for those already applied."""
        copies: list[tuple[aio_pika.Message, str]] = []
        for item, error in failed.failures:
            event, message_id = single(item)
            with structlog.contextvars.bound_contextvars(
                saga_id=item.saga_id, message_id=message_id, message_type=event.TYPE
            ):
                if isinstance(error, MalformedMessage):
                    target, headers = self._dead_letter_to(
                        raw, attempt, error, error.reason, message=(message_id, event.TYPE)
                    )
                elif isinstance(error, Deferred):
                    target, headers = self._defer_to(raw, attempt, error)
                else:
                    target, headers = self._retry_to(raw, attempt, error)
            copy = build_message(event, message_id=message_id, correlation_id=item.saga_id)
            # The failure's headers, not the batch's own history (its trace, its
            # deliveries, its replays): the copy is a message of its own.
            kept = {k: v for k, v in headers.items() if k not in BATCH_ONLY}
            copy.headers = {**(copy.headers or {}), **kept}
            copy.app_id = raw.app_id
            copies.append((copy, target))
        results = await asyncio.gather(
            *(self.bus.publish(c, exchange="", routing_key=t) for c, t in copies),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:  # the batch must go back, whatever failed
            first = repr(failures[0])
            log.warning("forward_failed_requeueing", target="(batch items)", error=first)
            await self._settle(raw, ack=False)
            return
        await self._settle(raw, ack=True)

    async def _forward(
        self, raw: AbstractIncomingMessage, queue: str, headers: dict[str, Any]
    ) -> None:
        """Publish a copy straight to ``queue`` (confirmed), then ack the original.
        If the copy cannot be published the original is requeued, never dropped."""
        copy = copy_message(raw, headers=headers)
        try:
            await self.bus.publish(copy, exchange="", routing_key=queue)
        except Exception as e:  # the original must go back, whatever failed
            log.warning("forward_failed_requeueing", target=queue, error=repr(e))
            await self._settle(raw, ack=False)
            return
        await self._settle(raw, ack=True)

    @staticmethod
    async def _settle(raw: AbstractIncomingMessage, *, ack: bool) -> None:
        """Ack, or nack with requeue. If the channel is gone the broker already requeued
        the message; there is nothing left to do but say so."""
        try:
            if ack:
                await raw.ack()
            else:
                await raw.nack(requeue=True)
        except Exception as e:  # a closed channel cannot settle anything
            log.warning("delivery_not_settled_will_be_redelivered", error=repr(e))


def _attempt(raw: AbstractIncomingMessage) -> int:
    return max(1, header_int((raw.headers or {}).get(ATTEMPT), 1))
