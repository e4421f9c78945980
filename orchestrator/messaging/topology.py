"""RabbitMQ names and declarations, shared by every service so declarations always agree.

In development every service declares the whole topology at start-up (declarations are
idempotent), so commands queue up for a participant that is not running yet instead of
being returned. In production (``SAGA_DECLARE_TOPOLOGY=false``) ``saga topology apply``
declares it once with administrator credentials and the services, running as users that
may not configure anything, only check passively that it exists (:meth:`Topology.prepare`).

Tunable settings can live in policies instead of queue arguments
(``SAGA_TOPOLOGY_POLICIES=true``, :meth:`Topology.policies`): the retry delays
(``message-ttl`` of the retry tiers, then named by number: ``<queue>.retry.1``) and the
quorum ``delivery-limit``. RabbitMQ lets a queue argument win over a policy for most keys
and takes the lower of the two for ``message-ttl`` and ``delivery-limit``, so a policy
only governs what the declaration leaves out. Where a queue dead-letters to is structure,
not a tunable, and stays an argument (it differs per queue, and one policy applies to a
queue at a time), as does the queue type, which no policy can set.

Names, with the default namespace ``saga``::

    saga.commands   topic   start commands -> orchestrators, key <area>.<command>;
                            orchestrator -> participants, key <participant>.<command>
    saga.replies    direct  participants -> orchestrator, key = the command's reply_to
                            (the saga's name)
    saga.events     topic   saga outcomes and progress, domain events -> event consumers,
                            key <saga>.<completed|failed|compensated|progressed>
    saga.control    topic   control messages (fault injection when enabled)

    saga.orchestrator.<saga>.starts     start commands of one saga (its start routing keys)
    saga.orchestrator.<saga>.replies    replies to that saga's commands
    saga.<participant>.commands         commands for one participant service
    saga.projections.sagas, saga.analytics.events, ...   read side and pack queues
    saga.<queue>.retry.<delay>          TTL tier; dead-letters back to the work queue
    saga.<queue>.dlq                    parking lot after the last attempt

Every queue is durable. With quorum queues (the default) the retry tiers and dead-letter
queues are quorum queues too, so a message waiting for its retry or parked for an
operator survives the loss of a cluster node like one in a work queue; a tier
dead-letters back to its work queue at-least-once (RabbitMQ >= 3.10). The queues are
derived from the registered sagas (``Routes``), so a new saga pack needs no edit here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import aio_pika
from aiormq.exceptions import ChannelNotFoundEntity

from orchestrator.errors import StartupRefused

if TYPE_CHECKING:
    from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractQueue

__all__ = [
    "READ_SIDE_QUEUES",
    "Policy",
    "QueueSpec",
    "Routes",
    "SagaRoute",
    "Topology",
    "TopologyMissing",
    "WorkQueue",
    "delay_label",
]

QueueType = Literal["quorum", "classic"]
APPLY_COMMAND = "saga topology apply"


class TopologyMissing(StartupRefused):
    """A service that does not declare the topology found part of it missing."""


@dataclass(frozen=True, kw_only=True)
class Policy:
    """A RabbitMQ policy ``saga topology apply`` sets (management API ``/api/policies``)."""

    name: str
    pattern: str
    definition: dict[str, Any]
    priority: int = 0
    apply_to: Literal["queues", "exchanges", "all"] = "queues"


def delay_label(seconds: float) -> str:
    """A delay as a short, readable queue-name suffix: 500ms, 5s, 2m, 1h."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


LEGACY_REPLY_KEY = "orchestrator"
"""The reply key of releases before one queue per saga, when the order saga was the only
one: commands sent by such a release carry it as ``reply_to``. Bound to the order saga's
reply queue for one release, so that their replies still arrive after an upgrade."""


def _legacy_reply_keys(saga: str) -> tuple[str, ...]:
    return (LEGACY_REPLY_KEY,) if saga == "order_fulfilment" else ()


@dataclass(frozen=True, kw_only=True)
class WorkQueue:
    """A queue a service consumes, with its retry tiers and dead-letter queue."""

    name: str
    exchange: str
    bindings: tuple[str, ...]
    retry_delays: tuple[float, ...]
    purpose: str
    attempts: int | None = None
    numbered_tiers: bool = False
    """Retry tiers named by number (``retry.1``) rather than by delay (``retry.5s``): their
    delays then come from policies and can change without new queues."""

    @property
    def dlq(self) -> str:
        """The parking lot for messages that cannot be processed."""
        return f"{self.name}.dlq"

    def retry_queue(self, tier: int) -> str:
        """Name of retry tier ``tier`` (0-based)."""
        if self.numbered_tiers:
            return f"{self.name}.retry.{tier + 1}"
        return f"{self.name}.retry.{delay_label(self.retry_delays[tier])}"

    @property
    def max_attempts(self) -> int:
        """Deliveries in all before the dead-letter queue: by default the first, then one
        per retry tier; if set higher, the last tier repeats."""
        return self.attempts or len(self.retry_delays) + 1


@dataclass(frozen=True, kw_only=True)
class QueueSpec:
    """A work queue a saga pack adds beside the derived ones: ``<namespace>.<suffix>``,
    bound to the events (or commands) exchange with ``bindings``."""

    suffix: str
    bindings: tuple[str, ...]
    purpose: str
    exchange: Literal["events", "commands"] = "events"


@dataclass(frozen=True, kw_only=True)
class SagaRoute:
    """What the topology needs to know of one registered saga."""

    name: str
    starts: tuple[str, ...]
    """Routing keys of its start commands (``orders.place_order``)."""


@dataclass(frozen=True, kw_only=True)
class Routes:
    """What a deployment's topology is derived from: its sagas, their participants and
    the queues their packs add. Built from the registry by ``orchestrator.packs``."""

    sagas: tuple[SagaRoute, ...] = ()
    participants: tuple[str, ...] = ()
    queues: tuple[QueueSpec, ...] = ()


READ_SIDE_QUEUES = (
    QueueSpec(
        suffix="projections.sagas",
        bindings=("*.progressed",),
        purpose="saga progress for the saga-summary projection",
    ),
    QueueSpec(
        suffix="analytics.events",
        bindings=("*.progressed",),
        purpose="saga progress counted for the metrics",
    ),
)
"""The generic read side's queues: every deployment has them."""


@dataclass(frozen=True, kw_only=True)
class Topology:
    """All exchange and queue names of one deployment (``namespace``), derived from the
    sagas it runs (``routes``)."""

    namespace: str = "saga"
    retry_delays: tuple[float, ...] = (1.0, 5.0, 30.0)
    max_attempts: int | None = None
    """Deliveries before dead-lettering; default one more than there are retry tiers."""
    queue_type: QueueType = "quorum"
    retry_queue_type: QueueType = "classic"
    """``SAGA_RETRY_QUEUE_TYPE``: of the retry tiers and dead-letter queues. ``quorum``
    replicates them (at-least-once dead-lettering) and is what a cluster needs (the
    deploy files set it); ``classic`` is the single-node default, where quorum adds
    five more Raft queues per work queue for no gain."""
    delivery_limit: int = 20
    """Quorum queues dead-letter a message redelivered this often (a crash loop backstop)."""
    routes: Routes = field(default_factory=Routes)
    declares: bool = True
    """``SAGA_DECLARE_TOPOLOGY``: services declare the topology at start-up; if false they
    only check passively that it exists."""
    tunables_in_policies: bool = False
    """``SAGA_TOPOLOGY_POLICIES``: retry delays and the delivery limit are set by policies
    (``saga topology apply``), not by queue arguments."""
    _queues: dict[str, WorkQueue] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        queues: list[WorkQueue] = []
        for saga in self.routes.sagas:
            queues.append(
                self._queue(
                    f"orchestrator.{saga.name}.starts",
                    self.commands_exchange,
                    saga.starts,
                    f"commands that start {saga.name} sagas",
                )
            )
            queues.append(
                self._queue(
                    f"orchestrator.{saga.name}.replies",
                    self.replies_exchange,
                    (self.reply_key(saga.name), *_legacy_reply_keys(saga.name)),
                    f"participants' replies to {saga.name} steps",
                )
            )
        queues += [
            self._queue(
                f"{p}.commands",
                self.commands_exchange,
                (f"{p}.*",),
                f"commands for the {p} service",
            )
            for p in self.routes.participants
        ]
        for spec in (*READ_SIDE_QUEUES, *self.routes.queues):
            exchange = self.events_exchange if spec.exchange == "events" else self.commands_exchange
            queues.append(self._queue(spec.suffix, exchange, spec.bindings, spec.purpose))
        by_name: dict[str, WorkQueue] = {}
        for q in queues:
            old = by_name.get(q.name)
            # Two packs may add one queue (the stock projection): their bindings add up.
            merged = (*old.bindings, *q.bindings) if old else q.bindings
            by_name[q.name] = replace(q, bindings=tuple(dict.fromkeys(merged)))
        object.__setattr__(self, "_queues", by_name)

    @property
    def participants(self) -> tuple[str, ...]:
        """Every participant service that has a command queue."""
        return self.routes.participants

    @property
    def sagas(self) -> tuple[str, ...]:
        """Every saga the orchestrators of this deployment run."""
        return tuple(s.name for s in self.routes.sagas)

    def saga_queues(self, saga: str) -> tuple[WorkQueue, WorkQueue]:
        """The start and reply queues of one saga's orchestrators."""
        return (
            self.queue(f"orchestrator.{saga}.starts"),
            self.queue(f"orchestrator.{saga}.replies"),
        )

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
            numbered_tiers=self.tunables_in_policies,
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

    @staticmethod
    def reply_key(saga: str) -> str:
        """Routing key (and AMQP ``reply_to``) of a saga's reply queue: its name."""
        return saga

    def queue(self, suffix: str) -> WorkQueue:
        """The work queue ``<namespace>.<suffix>``, e.g. ``queue('inventory.commands')``."""
        try:
            return self._queues[f"{self.namespace}.{suffix}"]
        except KeyError:
            known = ", ".join(q.name.removeprefix(self.namespace + ".") for q in self.work_queues)
            raise KeyError(f"no work queue {suffix!r} in this topology ({known})") from None

    def has_queue(self, suffix: str) -> bool:
        """Whether ``<namespace>.<suffix>`` is a work queue of this topology."""
        return f"{self.namespace}.{suffix}" in self._queues

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
            args["x-queue-type"] = "quorum"
            if not self.tunables_in_policies:
                args["x-delivery-limit"] = self.delivery_limit
        return args

    def retry_queue_arguments(self, q: WorkQueue, tier: int) -> dict[str, Any]:
        """Arguments of retry tier ``tier``: its delay as the queue's TTL (unless policies
        set it), then back to the work queue. Quorum tiers dead-letter at-least-once
        (which needs reject-publish)."""
        args: dict[str, Any] = {"x-queue-type": self.retry_queue_type}
        if not self.tunables_in_policies:
            args["x-message-ttl"] = round(q.retry_delays[tier] * 1000)
        args |= {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": q.name}
        if self.retry_queue_type == "quorum":
            args |= {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
        return args

    def dlq_arguments(self) -> dict[str, Any]:
        """Arguments of a dead-letter queue: its queue type, nothing else."""
        return {"x-queue-type": self.retry_queue_type}

    @property
    def exchanges(self) -> dict[str, aio_pika.ExchangeType]:
        """Every exchange of this namespace with its type."""
        return {
            self.commands_exchange: aio_pika.ExchangeType.TOPIC,
            self.replies_exchange: aio_pika.ExchangeType.DIRECT,
            self.events_exchange: aio_pika.ExchangeType.TOPIC,
            self.control_exchange: aio_pika.ExchangeType.TOPIC,
        }

    async def declare(self, channel: AbstractChannel) -> None:
        """Declare every exchange, queue and binding. Idempotent."""
        declared = {
            name: await channel.declare_exchange(name, kind, durable=True)
            for name, kind in self.exchanges.items()
        }
        for q in self.work_queues:
            await channel.declare_queue(q.dlq, durable=True, arguments=self.dlq_arguments())
            for tier in range(len(q.retry_delays)):
                await channel.declare_queue(
                    q.retry_queue(tier), durable=True, arguments=self.retry_queue_arguments(q, tier)
                )
            queue = await channel.declare_queue(
                q.name, durable=True, arguments=self.work_queue_arguments(q)
            )
            for key in q.bindings:
                await queue.bind(declared[q.exchange], routing_key=key)

    def policies(self) -> list[Policy]:
        """The policies of this namespace: one per retry tier number (its delay) and one
        for the work queues (the delivery limit). Each names its queues exactly, so a
        namespace never matches another's queues."""
        queues = "|".join(re.escape(q.name) for q in self.work_queues)
        if not queues:
            return []
        found: list[Policy] = []
        if self.queue_type == "quorum":
            found.append(
                Policy(
                    name=f"{self.namespace}.work",
                    pattern=f"^({queues})$",
                    definition={"delivery-limit": self.delivery_limit},
                )
            )
        for tier, delay in enumerate(self.retry_delays):
            sample = self.work_queues[0]
            suffix = sample.retry_queue(tier).removeprefix(sample.name)
            found.append(
                Policy(
                    name=f"{self.namespace}.retry{suffix.removeprefix('.retry')}",
                    pattern=f"^({queues}){re.escape(suffix)}$",
                    definition={"message-ttl": round(delay * 1000)},
                )
            )
        return found

    async def prepare(self, connection: AbstractConnection) -> None:
        """What a service does at start-up: declare the topology, or, when it does not
        declare (``SAGA_DECLARE_TOPOLOGY=false``), check that all of it exists and
        refuse to start, naming what is missing and the command that creates it."""
        if self.declares:
            if self.tunables_in_policies:
                raise StartupRefused(
                    "SAGA_TOPOLOGY_POLICIES=true: the retry delays and the delivery limit "
                    "are policies that only `saga topology apply` sets; run it and start "
                    "the services with SAGA_DECLARE_TOPOLOGY=false"
                )
            channel = await connection.channel()
            try:
                await self.declare(channel)
            finally:
                await channel.close()
            return
        missing = await self.missing(connection)
        if missing:
            shown = ", ".join(missing[:10]) + (
                f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            )
            raise TopologyMissing(
                f"SAGA_DECLARE_TOPOLOGY=false and the topology of namespace "
                f"{self.namespace!r} is incomplete; missing: {shown}. Create it with "
                f"`{APPLY_COMMAND}` (administrator credentials, same SAGA_NAMESPACE and "
                "SAGA_DEFINITIONS)"
            )

    async def missing(self, connection: AbstractConnection) -> list[str]:
        """Exchanges (``exchange <name>``) and queues (``queue <name>``) of this topology
        that do not exist, found by passive declarations (which need no permission)."""
        checks = [("exchange", name) for name in self.exchanges] + [
            ("queue", name) for name in self.all_queue_names()
        ]
        missing: list[str] = []
        channel = await connection.channel()
        try:
            for kind, name in checks:
                try:
                    if kind == "exchange":
                        await channel.declare_exchange(name, passive=True)
                    else:
                        await channel.declare_queue(name, passive=True)
                except ChannelNotFoundEntity:  # it closes the channel
                    missing.append(f"{kind} {name}")
                    channel = await connection.channel()
        finally:
            if not channel.is_closed:
                await channel.close()
        return missing

    async def open_queue(self, channel: AbstractChannel, q: WorkQueue) -> AbstractQueue:
        """A work queue to consume from: declared with its arguments, or, when services do
        not declare, looked up passively (a consumer needs read permission only)."""
        if not self.declares:
            return await channel.declare_queue(q.name, passive=True)
        return await channel.declare_queue(
            q.name, durable=True, arguments=self.work_queue_arguments(q)
        )

    async def delete(self, channel: AbstractChannel) -> None:
        """Delete every queue and exchange of this namespace (tests and teardown)."""
        for name in self.all_queue_names():
            await channel.queue_delete(name)
        for name in self.exchanges:
            await channel.exchange_delete(name)
