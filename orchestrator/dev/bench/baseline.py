"""The raw-broker baseline: the saga under test made only of aio-pika messages.

Per saga, the same persistent, confirmed messages the system sends for a completed
saga (start, a command and a reply per step, the outcome event; see
:mod:`orchestrator.dev.bench.plan`), with the same routing keys and bodies, through the
same broker, with durable queues of the same type, but no store, no framework and no
saga logic: the orchestrator role keeps a stage counter per saga in memory and sends a
parallel group's commands together. Like the services, each role is its own process
(``python -m orchestrator.dev.bench.baseline <role> <plan.json>``), publishes with
confirms and acks a delivery only after what it sent was confirmed, and the same driver
measures it. Names live under their own namespace, shaped like the system's::

    <ns>.commands (topic)  <ns>.replies (direct)  <ns>.events (topic)
    <ns>.orchestrator.<saga>.starts  <ns>.orchestrator.<saga>.replies
    <ns>.<participant>.commands
"""

from __future__ import annotations

import asyncio
import signal
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aio_pika

from orchestrator.dev.bench.plan import BaselinePlan
from orchestrator.settings import Settings

if TYPE_CHECKING:
    from aio_pika.abc import (
        AbstractChannel,
        AbstractConnection,
        AbstractExchange,
        AbstractIncomingMessage,
    )

    from orchestrator.dev.bench.plan import PlannedStep

__all__ = ["RawTopology", "main", "roles_of"]

ORCHESTRATOR = "orchestrator"


def roles_of(plan: BaselinePlan) -> tuple[str, ...]:
    """The baseline's processes: the orchestrator role, then one per participant."""
    return (ORCHESTRATOR, *plan.participants)


@dataclass(frozen=True, kw_only=True)
class RawTopology:
    """The baseline's exchanges and queues."""

    namespace: str
    plan: BaselinePlan
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

    @property
    def starts_queue(self) -> str:
        """The orchestrator role's start queue."""
        return f"{self.namespace}.orchestrator.{self.plan.saga}.starts"

    @property
    def replies_queue(self) -> str:
        """The orchestrator role's reply queue."""
        return f"{self.namespace}.orchestrator.{self.plan.saga}.replies"

    def commands_queue(self, participant: str) -> str:
        """A participant role's command queue."""
        return f"{self.namespace}.{participant}.commands"

    def queues(self) -> dict[str, tuple[str, str]]:
        """Queue name -> (exchange, binding key)."""
        queues = {
            self.starts_queue: (self.commands, self.plan.start_key),
            self.replies_queue: (self.replies, self.plan.reply_key),
        }
        for participant in self.plan.participants:
            queues[self.commands_queue(participant)] = (self.commands, f"{participant}.*")
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
        self.plan = topology.plan
        self.connection = connection
        self.channel = channel
        self.prefetch = prefetch
        self.stages: dict[str, tuple[int, int]] = {}
        """Saga id -> (stage running, replies it still waits for)."""
        self._exchanges: dict[str, AbstractExchange] = {}

    async def start(self) -> None:
        """Consume this role's queues."""
        for name in (self.topology.commands, self.topology.replies, self.topology.events):
            self._exchanges[name] = await self.channel.get_exchange(name, ensure=False)
        if self.name == ORCHESTRATOR:
            await self._consume(self.topology.starts_queue, self._on_start)
            await self._consume(self.topology.replies_queue, self._on_reply)
        else:
            await self._consume(self.topology.commands_queue(self.name), self._on_command)

    async def _consume(self, name: str, callback: Any) -> None:
        """Like the services: one channel per consumer, with its own prefetch."""
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=self.prefetch)
        queue = await channel.declare_queue(name, durable=True, arguments=self.topology.arguments())
        await queue.consume(callback)

    async def _publish(self, exchange: str, key: str, message: aio_pika.Message) -> None:
        await self._exchanges[exchange].publish(
            message, routing_key=key, mandatory=exchange != self.topology.events, timeout=15
        )

    async def _on_start(self, raw: AbstractIncomingMessage) -> None:
        await self._run_stage(raw.correlation_id or "", 0)
        await raw.ack()

    async def _on_reply(self, raw: AbstractIncomingMessage) -> None:
        saga_id = raw.correlation_id or ""
        if saga_id not in self.stages:  # not one of ours: nothing to do
            await raw.ack()
            return
        stage, waiting = self.stages[saga_id]
        if waiting > 1:
            self.stages[saga_id] = (stage, waiting - 1)
        elif stage + 1 < len(self.plan.stages):
            await self._run_stage(saga_id, stage + 1)
        else:
            self.stages.pop(saga_id, None)
            outcome = raw_message(
                self.plan.outcome_body.encode(),
                message_id=f"{saga_id}:done",
                saga_id=saga_id,
                type_name=self.plan.outcome_type,
            )
            await self._publish(self.topology.events, self.plan.outcome_key, outcome)
        await raw.ack()

    async def _run_stage(self, saga_id: str, stage: int) -> None:
        """Send every command of a stage together (a parallel group's leave at once)."""
        steps = self.plan.stages[stage]
        self.stages[saga_id] = (stage, len(steps))
        await asyncio.gather(*(self._command(saga_id, step) for step in steps))

    async def _command(self, saga_id: str, step: PlannedStep) -> None:
        message = raw_message(
            step.command_body.encode(),
            message_id=f"{saga_id}:{step.name}:do",
            saga_id=saga_id,
            type_name=step.command_type,
            reply_to=self.plan.reply_key,
        )
        await self._publish(self.topology.commands, step.routing_key, message)

    async def _on_command(self, raw: AbstractIncomingMessage) -> None:
        saga_id = raw.correlation_id or ""
        step = self.plan.step_for(raw.type or "")
        reply = raw_message(
            step.reply_body.encode(),
            message_id=f"{raw.message_id}:reply",
            saga_id=saga_id,
            type_name=step.reply_type,
        )
        await self._publish(self.topology.replies, raw.reply_to or self.plan.reply_key, reply)
        await raw.ack()


async def serve(role: str, plan: BaselinePlan, settings: Settings) -> None:
    """Run one role until SIGTERM/SIGINT."""
    topology = RawTopology(namespace=settings.namespace, plan=plan, queue_type=settings.queue_type)
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
    """Entry point: ``python -m orchestrator.dev.bench.baseline <role> <plan.json>``."""
    if len(sys.argv) != 3:
        sys.exit("usage: python -m orchestrator.dev.bench.baseline <role> <plan.json>")
    role, plan = sys.argv[1], BaselinePlan.read(Path(sys.argv[2]))
    if role not in roles_of(plan):
        sys.exit(f"no role {role!r} in the baseline of {plan.saga}: {', '.join(roles_of(plan))}")
    settings = Settings.from_env()
    try:
        import uvloop  # noqa: PLC0415 - the services run on uvloop too
    except ImportError:  # pragma: no cover
        asyncio.run(serve(role, plan, settings))
    else:
        uvloop.run(serve(role, plan, settings))


if __name__ == "__main__":
    main()
