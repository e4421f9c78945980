"""RabbitMQ names and declarations, shared by every service so declarations always agree.

Every service declares the whole topology at start-up (declarations are idempotent), so
commands queue up for a participant that is not running yet instead of being returned.

Names, with the default namespace ``saga``::

    saga.commands   topic   orchestrator -> participants, key <participant>.<command>
    saga.replies    direct  participants -> orchestrator, key = the command's reply_to
    saga.events     topic   saga outcomes and progress, restocks -> event consumers,
                            key <saga>.<completed|failed|compensated|progressed>
    saga.control    topic   control messages (fault injection when enabled)

    saga.<service>.<commands|replies|events>       durable work queue (quorum by default)
    saga.<service>.<...>.retry.<delay>             TTL tier; dead-letters back to the work queue
    saga.<service>.<...>.dlq                       parking lot after the last attempt
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import aio_pika

if TYPE_CHECKING:
    from aio_pika.abc import AbstractChannel

__all__ = ["Topology", "WorkQueue", "delay_label"]

QueueType = Literal["quorum", "classic"]


def delay_label(seconds: float) -> str:
    """A delay as a short, readable queue-name suffix: 500ms, 5s, 2m, 1h."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True, kw_only=True)
class WorkQueue:
    """A queue a service consumes, with its retry tiers and dead-letter queue."""

    name: str
    exchange: str
    bindings: tuple[str, ...]
    retry_delays: tuple[float, ...]
    purpose: str
    attempts: int | None = None

    @property
    def dlq(self) -> str:
        """The parking lot for messages that cannot be processed."""
        return f"{self.name}.dlq"

    def retry_queue(self, tier: int) -> str:
        """Name of retry tier ``tier`` (0-based)."""
        return f"{self.name}.retry.{delay_label(self.retry_delays[tier])}"

    @property
    def max_attempts(self) -> int:
        """Deliveries in all before the dead-letter queue: by default the first, then one
        per retry tier; if set higher, the last tier repeats."""
        return self.attempts or len(self.retry_delays) + 1


@dataclass(frozen=True, kw_only=True)
class Topology:
    """All exchange and queue names of one deployment (``namespace``)."""

    namespace: str = "saga"
    retry_delays: tuple[float, ...] = (1.0, 5.0, 30.0)
    max_attempts: int | None = None
    """Deliveries before dead-lettering; default one more than there are retry tiers."""
    queue_type: QueueType = "quorum"
    delivery_limit: int = 20
    """Quorum queues dead-letter a message redelivered this often (a crash loop backstop)."""
    participants: tuple[str, ...] = ("inventory", "payment", "shipping")
    event_consumers: tuple[str, ...] = ("inventory", "payment")
    _queues: dict[str, WorkQueue] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        queues = [
            self._queue(
                "orchestrator.commands",
                self.commands_exchange,
                ("orders.*",),
                "commands that start sagas (PlaceOrder)",
            ),
            self._queue(
                "orchestrator.replies",
                self.replies_exchange,
                (self.reply_key,),
                "participants' replies to saga steps",
            ),
        ]
        queues += [
            self._queue(
                f"{p}.commands",
                self.commands_exchange,
                (f"{p}.*",),
                f"commands for the {p} service",
            )
            for p in self.participants
        ]
        queues += [
            self._queue(
                f"{c}.events",
                self.events_exchange,
                ("*.completed",),
                f"saga outcomes the {c} service settles (ship stock, capture payment)",
            )
            for c in self.event_consumers
        ]
        progress, restocked = "*.progressed", "inventory.restocked"
        queues += [
            self._queue(
                "projections.sagas",
                self.events_exchange,
                (progress,),
                "saga progress for the saga-summary projection",
            ),
            self._queue(
                "projections.stock",
                self.events_exchange,
                (progress, restocked),
                "stock movements for the stock-level projection",
            ),
            self._queue(
                "notifications.events",
                self.events_exchange,
                (progress, restocked),
                "stock movements checked for low-stock notifications",
            ),
            self._queue(
                "analytics.events",
                self.events_exchange,
                (progress,),
                "saga progress counted for the metrics",
            ),
        ]
        object.__setattr__(self, "_queues", {q.name: q for q in queues})

    def _queue(
        self, suffix: str, exchange: str, bindings: tuple[str, ...], purpose: str
    ) -> WorkQueue:
        return WorkQueue(
            name=f"{self.namespace}.{suffix}",
            exchange=exchange,
            bindings=bindings,
            retry_delays=self.retry_delays,
            purpose=purpose,
            attempts=self.max_attempts,
        )

    @property
    def commands_exchange(self) -> str:
        """Topic exchange for commands."""
        return f"{self.namespace}.commands"

    @property
    def replies_exchange(self) -> str:
        """Direct exchange for replies."""
        return f"{self.namespace}.replies"

    @property
    def events_exchange(self) -> str:
        """Topic exchange for saga outcome events."""
        return f"{self.namespace}.events"

    @property
    def control_exchange(self) -> str:
        """Topic exchange for operator and test control messages (fault injection)."""
        return f"{self.namespace}.control"

    @property
    def reply_key(self) -> str:
        """Routing key (and AMQP ``reply_to``) of the orchestrator's reply queue."""
        return "orchestrator"

    def queue(self, suffix: str) -> WorkQueue:
        """The work queue ``<namespace>.<suffix>``, e.g. ``queue('inventory.commands')``."""
        return self._queues[f"{self.namespace}.{suffix}"]

    @property
    def work_queues(self) -> tuple[WorkQueue, ...]:
        """Every work queue."""
        return tuple(self._queues.values())

    def all_queue_names(self) -> list[str]:
        """Work queues, retry tiers and dead-letter queues."""
        names: list[str] = []
        for q in self.work_queues:
            names += [q.name, *(q.retry_queue(i) for i in range(len(q.retry_delays))), q.dlq]
        return names

    def work_queue_arguments(self, q: WorkQueue) -> dict[str, Any]:
        """Arguments of a work queue: type, poison backstop, where rejected messages go."""
        args: dict[str, Any] = {
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": q.dlq,
        }
        if self.queue_type == "quorum":
            args |= {"x-queue-type": "quorum", "x-delivery-limit": self.delivery_limit}
        return args

    async def declare(self, channel: AbstractChannel) -> None:
        """Declare every exchange, queue and binding. Idempotent."""
        exchanges = {
            self.commands_exchange: aio_pika.ExchangeType.TOPIC,
            self.replies_exchange: aio_pika.ExchangeType.DIRECT,
            self.events_exchange: aio_pika.ExchangeType.TOPIC,
            self.control_exchange: aio_pika.ExchangeType.TOPIC,
        }
        declared = {
            name: await channel.declare_exchange(name, kind, durable=True)
            for name, kind in exchanges.items()
        }
        for q in self.work_queues:
            await channel.declare_queue(q.dlq, durable=True, arguments={"x-queue-type": "classic"})
            for tier, delay in enumerate(q.retry_delays):
                await channel.declare_queue(
                    q.retry_queue(tier),
                    durable=True,
                    arguments={
                        "x-queue-type": "classic",
                        "x-message-ttl": int(delay * 1000),
                        "x-dead-letter-exchange": "",
                        "x-dead-letter-routing-key": q.name,
                    },
                )
            queue = await channel.declare_queue(
                q.name, durable=True, arguments=self.work_queue_arguments(q)
            )
            for key in q.bindings:
                await queue.bind(declared[q.exchange], routing_key=key)

    async def delete(self, channel: AbstractChannel) -> None:
        """Delete every queue and exchange of this namespace (tests and teardown)."""
        for name in self.all_queue_names():
            await channel.queue_delete(name)
        for name in (
            self.commands_exchange,
            self.replies_exchange,
            self.events_exchange,
            self.control_exchange,
        ):
            await channel.exchange_delete(name)
