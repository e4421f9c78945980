"""The raw-broker baseline: a 3-step saga made only of aio-pika messages.

Per saga, the same eight persistent, confirmed messages the system sends for a completed
order (start, three commands, three replies, the outcome event), through the same broker,
with durable queues of the same type, but no store, no framework and no saga logic: the
orchestrator role keeps one step counter per saga in memory. Like the services, each
role is its own process (``python -m orchestrator.bench.baseline <role>``), publishes with
confirms and acks a delivery only after what it sent was confirmed, and the same driver
measures it. Names live under their own namespace::

    <ns>.commands (topic)  <ns>.replies (direct)  <ns>.events (topic)
    <ns>.orchestrator.commands  <ns>.orchestrator.replies  <ns>.<participant>.commands
"""

from __future__ import annotations

import asyncio
import signal
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aio_pika

from orchestrator.settings import Settings

if TYPE_CHECKING:
    from aio_pika.abc import (
        AbstractChannel,
        AbstractConnection,
        AbstractExchange,
        AbstractIncomingMessage,
    )

__all__ = ["ROLES", "RawTopology", "main"]

STEPS = (
    ("inventory", "inventory.reserve_stock"),
    ("payment", "payment.authorize_payment"),
    ("shipping", "shipping.schedule_shipment"),
)
ROLES = ("orchestrator", *(p for p, _ in STEPS))
START_KEY = "orders.place_order"
OUTCOME_KEY = "order_fulfilment.completed"


@dataclass(frozen=True, kw_only=True)
class RawTopology:
    """The baseline's exchanges and queues."""

    namespace: str
    queue_type: str = "quorum"

    @property
    def commands(self) -> str:
        """Topic exchange: starts and commands."""
        return f"{self.namespace}.commands"

    @property
    def replies(self) -> str:
        """Direct exchange: replies to the orchestrator role."""
        return f"{self.namespace}.replies"

    @property
    def events(self) -> str:
        """Topic exchange: outcome events."""
        return f"{self.namespace}.events"

    def queues(self) -> dict[str, tuple[str, str]]:
        """Queue name -> (exchange, binding key)."""
        queues = {
            f"{self.namespace}.orchestrator.commands": (self.commands, "orders.*"),
            f"{self.namespace}.orchestrator.replies": (self.replies, "orchestrator"),
        }
        for participant, _ in STEPS:
            queues[f"{self.namespace}.{participant}.commands"] = (self.commands, f"{participant}.*")
        return queues

    def arguments(self) -> dict[str, Any]:
        """Queue arguments: the system's queue type."""
        return {"x-queue-type": self.queue_type}

    async def declare(self, channel: AbstractChannel) -> None:
        """Declare everything (idempotent)."""
        kinds = {
            self.commands: aio_pika.ExchangeType.TOPIC,
            self.replies: aio_pika.ExchangeType.DIRECT,
            self.events: aio_pika.ExchangeType.TOPIC,
        }
        exchanges = {
            name: await channel.declare_exchange(name, kind, durable=True)
            for name, kind in kinds.items()
        }
        for name, (exchange, key) in self.queues().items():
            queue = await channel.declare_queue(name, durable=True, arguments=self.arguments())
            await queue.bind(exchanges[exchange], routing_key=key)

    async def delete(self, channel: AbstractChannel) -> None:
        """Delete everything."""
        for name in self.queues():
            await channel.queue_delete(name)
        for name in (self.commands, self.replies, self.events):
            await channel.exchange_delete(name)


def raw_message(
    body: bytes, *, message_id: str, saga_id: str, type_name: str, reply_to: str | None = None
) -> aio_pika.Message:
    """A persistent JSON message with the properties the system's messages carry."""
    return aio_pika.Message(
        body,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message_id,
        correlation_id=saga_id,
        type=type_name,
        reply_to=reply_to,
        app_id="bench-baseline",
        timestamp=datetime.now(UTC),
        headers={"x-causation-id": message_id},
    )


class Role:
    """One baseline process: consume, publish confirmed, then ack."""

    def __init__(
        self,
        name: str,
        topology: RawTopology,
        *,
        connection: AbstractConnection,
        channel: AbstractChannel,
        prefetch: int,
    ) -> None:
        self.name = name
        self.topology = topology
        self.connection = connection
        self.channel = channel
        self.prefetch = prefetch
        self.steps: dict[str, int] = {}
        self._exchanges: dict[str, AbstractExchange] = {}

    async def start(self) -> None:
        """Consume this role's queues."""
        for name in (self.topology.commands, self.topology.replies, self.topology.events):
            self._exchanges[name] = await self.channel.get_exchange(name, ensure=False)
        if self.name == "orchestrator":
            await self._consume("orchestrator.commands", self._on_start)
            await self._consume("orchestrator.replies", self._on_reply)
        else:
            await self._consume(f"{self.name}.commands", self._on_command)

    async def _consume(self, suffix: str, callback: Any) -> None:
        """Like the services: one channel per consumer, with its own prefetch."""
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=self.prefetch)
        name = f"{self.topology.namespace}.{suffix}"
        queue = await channel.declare_queue(name, durable=True, arguments=self.topology.arguments())
        await queue.consume(callback)

    async def _publish(self, exchange: str, key: str, message: aio_pika.Message) -> None:
        await self._exchanges[exchange].publish(
            message, routing_key=key, mandatory=exchange != self.topology.events, timeout=15
        )

    async def _on_start(self, raw: AbstractIncomingMessage) -> None:
        saga_id = raw.correlation_id or ""
        self.steps[saga_id] = 0
        await self._command(saga_id, 0, raw.body)
        await raw.ack()

    async def _on_reply(self, raw: AbstractIncomingMessage) -> None:
        saga_id = raw.correlation_id or ""
        step = self.steps.get(saga_id, -1) + 1
        if step < len(STEPS):
            self.steps[saga_id] = step
            await self._command(saga_id, step, raw.body)
        else:
            self.steps.pop(saga_id, None)
            body = b'{"saga_name":"order_fulfilment","order_id":"%s"}' % saga_id.encode()
            outcome = raw_message(
                body, message_id=f"{saga_id}:done", saga_id=saga_id, type_name="saga.completed.v1"
            )
            await self._publish(self.topology.events, OUTCOME_KEY, outcome)
        await raw.ack()

    async def _command(self, saga_id: str, step: int, body: bytes) -> None:
        _, key = STEPS[step]
        message = raw_message(
            body,
            message_id=f"{saga_id}:{step}:do",
            saga_id=saga_id,
            type_name=f"{key}.v1",
            reply_to="orchestrator",
        )
        await self._publish(self.topology.commands, key, message)

    async def _on_command(self, raw: AbstractIncomingMessage) -> None:
        saga_id = raw.correlation_id or ""
        body = b'{"order_id":"%s","status":"ok"}' % saga_id.encode()
        reply = raw_message(
            body, message_id=f"{raw.message_id}:reply", saga_id=saga_id, type_name="bench.reply.v1"
        )
        await self._publish(self.topology.replies, raw.reply_to or "orchestrator", reply)
        await raw.ack()


async def serve(role: str, settings: Settings) -> None:
    """Run one role until SIGTERM/SIGINT."""
    topology = RawTopology(namespace=settings.namespace, queue_type=settings.queue_type)
    connection = await aio_pika.connect_robust(
        settings.amqp_url, client_properties={"connection_name": f"{settings.namespace}.{role}"}
    )
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await topology.declare(channel)
        role_ = Role(
            role, topology, connection=connection, channel=channel, prefetch=settings.prefetch
        )
        await role_.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"{role} ready", file=sys.stderr, flush=True)
        await stop.wait()


def main() -> None:
    """Entry point: ``python -m orchestrator.bench.baseline <role>``."""
    if len(sys.argv) != 2 or sys.argv[1] not in ROLES:
        sys.exit(f"usage: python -m orchestrator.bench.baseline {{{','.join(ROLES)}}}")
    settings = Settings.from_env()
    try:
        import uvloop  # noqa: PLC0415 - the services run on uvloop too
    except ImportError:  # pragma: no cover
        asyncio.run(serve(sys.argv[1], settings))
    else:
        uvloop.run(serve(sys.argv[1], settings))


if __name__ == "__main__":
    main()
