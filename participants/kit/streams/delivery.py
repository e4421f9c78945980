"""The delivery rules of every work-queue consumer, as a faststream middleware.

The same rules as ``orchestrator.messaging.consumer.Consumer``, with its functions for
headers and copies, so a message parked by a faststream participant looks exactly like
one parked by an aio-pika one:

* the command cannot be read (``read_envelope``) or has no handler here: dead-letter
  queue at once, the reason in ``x-error-reason``; the handler never runs;
* the handler raises ``MalformedMessage``: dead-letter queue with its reason;
* it raises while the store does not answer: the message is held and run again when
  it answers, its attempt not counted (``orchestrator.messaging.outage``);
* it raises anything else: a copy to the next retry tier with ``x-attempt`` + 1, and
  after the last attempt to the dead-letter queue (``retries_exhausted``);
* it returns: the reply is published (confirmed) to the replies exchange under the
  command's ``reply_to``, id ``<command id>:reply``, then the command is acked.

Subscribers run with ``AckPolicy.MANUAL``: only this middleware settles a message, and
only after the handler's effect is stored and its reply confirmed. Whatever escapes
faststream before the handler (a parser or filter error) is dead-lettered by
``after_processed``, so no delivery is left unsettled.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import structlog
from faststream import BaseMiddleware

from contracts import MalformedMessage
from orchestrator.errors import NotConnected
from orchestrator.messaging.consumer import ERROR_MESSAGE_LIMIT, dead_letter_headers
from orchestrator.messaging.envelope import (
    ATTEMPT,
    HANDLER_ATTEMPTS,
    build_message,
    copy_message,
    header_int,
    read_envelope,
)
from orchestrator.observability import metrics, tracing
from orchestrator.runtime.locks import KeyedLocks
from participants.kit.faults import InjectedFault
from participants.kit.streams.participant import current_envelope, handling

if TYPE_CHECKING:
    from types import TracebackType

    import aio_pika
    from aio_pika.abc import AbstractIncomingMessage
    from faststream._internal.basic_types import AsyncFuncAny
    from faststream._internal.context.repository import ContextRepo
    from faststream.message import StreamMessage
    from faststream.rabbit import RabbitBroker

    from contracts import Message
    from orchestrator.faults import FaultRule
    from orchestrator.messaging.envelope import Envelope
    from orchestrator.messaging.outage import StoreGate
    from orchestrator.messaging.publisher import ConfirmingPublisher
    from orchestrator.messaging.topology import Topology, WorkQueue
    from participants.kit.faults import FaultHook
    from participants.kit.streams.participant import StreamParticipant

__all__ = ["Delivery", "DeliveryMiddleware", "current_command"]

log = structlog.get_logger("consumer")


async def current_command(msg: StreamMessage[Any]) -> Message:
    """The subscribers' decoder: the command the middleware already read and validated
    (with upcasting), so the handler's model parameter is that very object."""
    del msg
    return current_envelope().message


class Delivery:
    """What the middleware of one participant instance shares across messages."""

    def __init__(
        self,
        *,
        participant: StreamParticipant,
        broker: RabbitBroker,
        topology: Topology,
        faults: FaultHook,
        max_body_bytes: int,
        store_gate: StoreGate,
        publish_timeout: float = 15.0,
    ) -> None:
        self.participant = participant
        self.broker = broker
        self.topology = topology
        self.faults = faults
        self.max_body_bytes = max_body_bytes
        self.store_gate = store_gate
        """Holds messages while the store does not answer (see the aio-pika consumer)."""
        self.publish_timeout = publish_timeout
        self.locks = KeyedLocks()
        self.resources: dict[str, Any] = {}
        """What the participant's ``@resource`` builders made (set at start)."""
        self.replies_sent = 0
        self.redelivered = 0
        """Deliveries the broker flagged as redelivered (a connection or node was lost
        with them unacked)."""
        self.publisher: ConfirmingPublisher | None = None
        """Set when the service has connected: replies and forwarded copies go through
        it, on the broker's connection but a channel of our own (confirmed, one publish
        of a message id at a time, replaced if the broker nacks it)."""

    def middleware(self, queue: WorkQueue) -> Any:
        """The middleware factory for the subscriber of ``queue`` (faststream builds one
        middleware per message)."""

        def build(msg: Any, /, *, context: ContextRepo) -> DeliveryMiddleware:
            return DeliveryMiddleware(msg, context=context, delivery=self, queue=queue)

        return build

    async def publish(self, message: aio_pika.Message, *, exchange: str, routing_key: str) -> None:
        """Publish, confirmed; raise BrokerUnavailable if the broker returns, refuses or
        does not confirm it."""
        if self.publisher is None:
            raise NotConnected("the participant's publisher is not open; start the service")
        await self.publisher.publish(message, exchange=exchange, routing_key=routing_key)

    async def send_reply(
        self, envelope: Envelope, reply: Message, *, fault: FaultRule | None = None
    ) -> None:
        """The reply to the command's ``reply_to``, as ``ParticipantService`` sends it;
        an injected ``drop``, ``delay`` or ``duplicate`` fault applies here."""
        if fault is not None and fault.action == "drop":
            log.warning("reply_dropped_by_fault", reply_type=reply.TYPE)
            return
        if fault is not None and fault.action == "delay":
            await asyncio.sleep(fault.delay_seconds)
        copies = fault.copies if fault is not None and fault.action == "duplicate" else 1
        if not envelope.reply_to:
            log.warning("reply_not_routable", reply_type=reply.TYPE, reason="no reply_to")
            return
        message = build_message(
            reply,
            message_id=f"{envelope.message_id}:reply",
            correlation_id=envelope.correlation_id,
            causation_id=envelope.message_id,
            app_id=self.participant.service,
            headers={HANDLER_ATTEMPTS: envelope.attempt},
        )
        for _ in range(copies):
            await self.publish(
                message, exchange=self.topology.replies_exchange, routing_key=envelope.reply_to
            )
            self.replies_sent += 1
        log.debug("reply_sent", reply_type=reply.TYPE, copies=copies)


class DeliveryMiddleware(BaseMiddleware):
    """One delivery of one work queue, from the raw message to its ack."""

    def __init__(
        self, msg: Any, /, *, context: ContextRepo, delivery: Delivery, queue: WorkQueue
    ) -> None:
        super().__init__(msg, context=context)
        self.delivery = delivery
        self.queue = queue
        self.settled = False

    async def consume_scope(self, call_next: AsyncFuncAny, msg: StreamMessage[Any]) -> Any:
        """Read, run the handler, reply, settle. Never raises: every path settles."""
        raw: AbstractIncomingMessage = msg.raw_message
        if raw.redelivered:
            self.delivery.redelivered += 1
        attempt = max(1, header_int((raw.headers or {}).get(ATTEMPT), 1))
        try:
            envelope = self._read(raw)
        except MalformedMessage as e:
            await self._dead_letter(raw, attempt, e, e.reason)
            return None
        except Exception as e:  # whatever else cannot be read must not wedge the queue
            await self._dead_letter(raw, attempt, e, "undecodable")
            return None
        with (
            structlog.contextvars.bound_contextvars(
                saga_id=envelope.correlation_id,
                message_id=envelope.message_id,
                message_type=envelope.message.TYPE,
                attempt=attempt,
            ),
            metrics.handling(self.queue.name),
        ):

            async def handle(envelope: Envelope) -> None:
                await self._handle(envelope, call_next, msg)

            try:
                with tracing.consuming(self.queue.name, envelope):  # tracing: consumer span
                    await self.delivery.store_gate.guard(handle)(envelope)
            except MalformedMessage as e:
                await self._dead_letter(raw, attempt, e, e.reason)
            except Exception as e:
                await self._retry(raw, attempt, e)
            else:
                await self._settle(raw, ack=True)
        return None

    def _read(self, raw: AbstractIncomingMessage) -> Envelope:
        """The command, validated; one this service has no handler for is malformed."""
        envelope = read_envelope(raw, max_body_bytes=self.delivery.max_body_bytes)
        participant = self.delivery.participant
        if type(envelope.message) not in participant.commands:
            raise MalformedMessage(
                "unknown_type",
                f"the {participant.service} service has no handler for {envelope.message.TYPE}",
            )
        return envelope

    async def after_processed(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> bool | None:
        """A delivery faststream gave up on before the handler is parked, not left
        unacked (it would block the queue's prefetch until the channel closes)."""
        raw: AbstractIncomingMessage | None = self.msg
        if self.settled or raw is None or not isinstance(exc_val, Exception):
            return False
        attempt = max(1, header_int((raw.headers or {}).get(ATTEMPT), 1))
        await self._dead_letter(raw, attempt, exc_val, "undecodable")
        return True

    async def _handle(self, envelope: Envelope, call_next: AsyncFuncAny, msg: Any) -> None:
        """The handler (one at a time per saga in this process) and its reply, doing
        what an injected fault says, if one applies."""
        delivery = self.delivery
        fault = await delivery.faults.match(envelope)
        if fault is not None and fault.action == "raise":
            raise InjectedFault(f"{fault.reason} (rule {fault.rule_id})")
        if fault is not None and fault.action == "decline":
            spec = delivery.participant.commands[type(envelope.message)]
            assert spec.refusal is not None, "a decline rule only matches refusable commands"
            await delivery.send_reply(envelope, spec.refusal(envelope.message, fault.reason))
            return
        async with delivery.locks(envelope.correlation_id):
            with (
                handling(envelope, delivery.resources),
                tracing.handling(delivery.participant.service, envelope),  # tracing
            ):
                reply = await call_next(msg)
        if fault is not None and fault.action == "crash":
            delivery.faults.crash(fault)
        if reply is not None:
            await delivery.send_reply(envelope, reply, fault=fault)

    async def _retry(self, raw: AbstractIncomingMessage, attempt: int, error: Exception) -> None:
        if attempt >= self.queue.max_attempts:
            await self._dead_letter(raw, attempt, error, "retries_exhausted")
            return
        target = self.queue.retry_queue(min(attempt - 1, len(self.queue.retry_delays) - 1))
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
        await self._forward(raw, target, headers)

    async def _dead_letter(
        self, raw: AbstractIncomingMessage, attempt: int, error: BaseException, reason: str
    ) -> None:
        headers = dead_letter_headers(
            raw, queue=self.queue.name, attempt=attempt, error=error, reason=reason
        )
        log.error(
            "message_dead_lettered",
            queue=self.queue.name,
            dlq=self.queue.dlq,
            reason=reason,
            error=str(error)[:ERROR_MESSAGE_LIMIT],
            message_id=raw.message_id,
            message_type=raw.type,
        )
        metrics.dead_lettered(self.queue.name, reason)
        await self._forward(raw, self.queue.dlq, headers)

    async def _forward(
        self, raw: AbstractIncomingMessage, queue: str, headers: dict[str, Any]
    ) -> None:
        """A confirmed copy straight to ``queue``, then ack; requeue if it cannot go."""
        try:
            await self.delivery.publish(
                copy_message(raw, headers=headers), exchange="", routing_key=queue
            )
        except Exception as e:  # the original must go back, whatever failed
            log.warning("forward_failed_requeueing", target=queue, error=repr(e))
            await self._settle(raw, ack=False)
            return
        await self._settle(raw, ack=True)

    async def _settle(self, raw: AbstractIncomingMessage, *, ack: bool) -> None:
        """Ack, or nack with requeue; a closed channel has already requeued it."""
        self.settled = True
        try:
            if ack:
                await raw.ack()
            else:
                await raw.nack(requeue=True)
        except Exception as e:  # a closed channel cannot settle anything
            log.warning("delivery_not_settled_will_be_redelivered", error=repr(e))
