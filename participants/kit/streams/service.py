"""A participant declared with :class:`StreamParticipant`, served by a faststream broker.

Start-up: the store, then the broker's connection, on which the whole topology is
declared exactly as every other service declares it (``Topology.declare``); the
subscribers then consume their queues passively, so no argument can disagree. Resources
(stores) are built for the handlers' ``uses(...)`` dependencies, the fault injector starts when
``SAGA_FAULTS_ENABLED`` is set, and only then does consuming begin.

Publishing goes through a channel of our own on the broker's connection
(``orchestrator.messaging.publisher.ConfirmingPublisher``, as the Bus publishes):
confirmed and mandatory, so a reply or a forwarded copy that no queue takes is an error,
not a silent loss; one publish of a message id at a time; replaced when the broker nacks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog
from faststream import AckPolicy, FastStream
from faststream.rabbit import Channel, RabbitBroker, RabbitQueue, RabbitRouter
from faststream.security import BaseSecurity
from yarl import URL

from contracts import MalformedMessage, resolve
from orchestrator.errors import OrchestratorError
from orchestrator.messaging.bus import Bus
from orchestrator.messaging.connection import failover_class
from orchestrator.messaging.outage import StoreGate
from orchestrator.messaging.publisher import ConfirmingPublisher
from orchestrator.observability import metrics, probes
from orchestrator.runtime.host import run_service
from orchestrator.settings import Settings
from orchestrator.store.connect import connect_mongo, store_probe
from participants.kit.faults import NO_FAULTS, FaultInjector
from participants.kit.streams.delivery import Delivery, current_command

if TYPE_CHECKING:
    from aio_pika.abc import AbstractRobustConnection
    from pymongo import AsyncMongoClient
    from pymongo.asynchronous.database import AsyncDatabase

    from contracts import Message
    from participants.kit.faults import FaultHook
    from participants.kit.streams.participant import StreamParticipant

__all__ = ["StreamService", "faststream_app", "run_participant"]

log = structlog.get_logger("host")


class StreamService:
    """One instance of a faststream participant on one deployment (``settings``)."""

    def __init__(
        self, participant: StreamParticipant, settings: Settings, *, instance: str = ""
    ) -> None:
        self.participant = participant
        self.service = participant.service
        self.settings = settings
        self.topology = settings.topology()
        instance = instance or settings.instance
        self.name = f"{settings.namespace}.{self.service}" + (f".{instance}" if instance else "")
        self.broker = failover_broker(settings, name=self.name, app_id=self.service)
        self.faults: FaultHook = NO_FAULTS
        if settings.faults_enabled:
            self.faults = FaultInjector(
                service=self.service,
                instance=self.name,
                namespace=settings.namespace,
                refusable=participant.refusable,
            )
        self.delivery = Delivery(
            participant=participant,
            broker=self.broker,
            topology=self.topology,
            faults=self.faults,
            max_body_bytes=settings.max_body_bytes,
            store_gate=StoreGate(self._store_answers),
        )
        self._client: AsyncMongoClient[dict[str, Any]] | None = None
        self._connection: AbstractRobustConnection | None = None
        self._fault_bus: Bus | None = None
        self._probes: probes.ProbeServer | None = None
        self.started = False
        self._subscribe()

    async def _store_answers(self) -> bool:
        return self._client is not None and await store_probe(self._client)()

    @property
    def db(self) -> AsyncDatabase[dict[str, Any]]:
        """The service's database (after :meth:`prepare`)."""
        if self._client is None:
            raise OrchestratorError(f"{self.service}: store used before start()")
        return self._client[self.settings.database]

    @property
    def connection(self) -> AbstractRobustConnection:
        """The broker connection (after :meth:`prepare`)."""
        if self._connection is None:
            raise OrchestratorError(f"{self.service}: connection used before start()")
        return self._connection

    @property
    def redelivered(self) -> int:
        """Deliveries the broker flagged as redelivered to this instance."""
        return self.delivery.redelivered

    @property
    def replies_sent(self) -> int:
        """Replies published by this instance (copies included)."""
        return self.delivery.replies_sent

    def resource(self, name: str) -> Any:
        """A resource built by a ``@participant.resource`` (after start)."""
        return self.delivery.resources[name]

    def _subscribe(self) -> None:
        """One router per work queue, with the delivery middleware; one faststream
        handler per command, chosen by the message's type."""
        commands = self.participant.commands
        for suffix in self.participant.queues:
            queue = self.topology.queue(suffix)
            router = RabbitRouter(middlewares=(self.delivery.middleware(queue),))
            subscriber = router.subscriber(
                RabbitQueue(queue.name, declare=False),  # declared by Topology.declare
                channel=Channel(prefetch_count=self.settings.prefetch),
                ack_policy=AckPolicy.MANUAL,  # the middleware acks after the effect is stored
                no_reply=True,  # replies go to the replies exchange, not to reply_to
                decoder=current_command,
                title=f"{queue.name}:{self.service}",
                description=queue.purpose,
            )
            for spec in commands.values():
                if spec.queue == suffix:
                    subscriber(spec.handler, filter=_is(spec.kind))
            subscriber(_unhandled)  # last: a type nobody here handles is dead-lettered
            self.broker.include_router(router)

    async def prepare(self) -> None:
        """Store, connection, topology, resources, faults: all but consuming."""
        self._client = await connect_mongo(
            self.settings.require_mongodb_url(),
            app_name=self.name,
            **self.settings.mongodb_options(),
        )
        self._connection = await self.broker.connect()
        await self.topology.prepare(self._connection)
        publisher = ConfirmingPublisher(
            self._connection,
            name=self.name,
            exchanges=(self.topology.replies_exchange,),
            timeout=self.delivery.publish_timeout,
        )
        await publisher.open()
        self.delivery.publisher = publisher
        metrics.watch_reconnects(self._connection, self.name)
        for name, build in self.participant.resources.items():
            self.delivery.resources[name] = await build(self)
        if self.settings.faults_enabled:
            # The fault injector's control listener speaks our Bus (test and harness only).
            self._fault_bus = Bus.of(
                self.settings, name=f"{self.name}.faults", topology=self.topology
            )
            await self._fault_bus.connect()
            await self.faults.start(database=self.db, bus=self._fault_bus, topology=self.topology)

    async def start(self) -> None:
        """Prepare, then consume (probes answer from the first moment)."""
        self._probes = await probes.attach(self.settings, self.service, self._readiness)
        await self.prepare()
        await self.broker.start()
        self.started = True
        log.info(
            "service_started",
            service=self.service,
            connection=self.name,
            queues=[self.topology.queue(q).name for q in self.participant.queues],
            flavour="faststream",
        )

    async def _readiness(self) -> dict[str, str]:
        return await probes.service_checks(
            connection=self._connection, client=self._client, consuming=self.started
        )

    async def stop(self) -> None:
        """Stop consuming (in-hand messages finish), then close everything."""
        self.delivery.store_gate.close()  # messages held for a store outage go back
        await probes.detach(self._probes, self._readiness)
        await self.broker.stop()
        await self.close()
        log.info("service_stopped", service=self.service)

    async def close(self) -> None:
        """Close the fault listener and the store (the broker is stopped already)."""
        await self.faults.stop()
        if self._fault_bus is not None:
            await self._fault_bus.close()
            self._fault_bus = None
        if self._client is not None:
            await self._client.close()
            self._client = None
        self.started = False

    async def kill(self) -> None:
        """Drop the connection at once, as a crash would: unacked messages go back."""
        await probes.detach(self._probes, self._readiness)
        if self._connection is not None:
            await self._connection.close()
        await self.close()


def failover_broker(settings: Settings, *, name: str, app_id: str) -> RabbitBroker:
    """A faststream broker on the deployment's nodes: the first that answers, and another
    live one when it is lost (the same ``FailoverConnection`` as the Bus), over TLS with
    the deployment's certificates when the URLs are ``amqps://``."""
    urls = settings.amqp_urls
    context = settings.amqp_ssl_context()
    broker = RabbitBroker(
        URL(urls[0]).update_query(name=name),  # the connection's name
        security=BaseSecurity(ssl_context=context) if context is not None else None,
        default_channel=Channel(publisher_confirms=True, on_return_raises=True),
        app_id=app_id,
        reconnect_interval=1.0,
        logger=None,  # structlog logs every outcome; faststream's lines would double them
    )
    # faststream hands these keywords to aio_pika.connect_robust as they are.
    broker._connection_kwargs["connection_class"] = failover_class(urls)
    return broker


def _is(kind: type[Message]) -> Any:
    """A faststream filter: the message's AMQP type is ``kind`` (or an older version of
    it). An unknown type matches nothing here and reaches ``_unhandled``."""

    async def matches(msg: Any) -> bool:
        try:
            return resolve(msg.raw_message.type) is kind
        except MalformedMessage:
            return False

    return matches


async def _unhandled(command: Any) -> None:
    """Commands no handler of this service takes; the middleware parks them first."""
    raise AssertionError(f"unreachable: {type(command).__name__} reached the fallback")


def run_participant(participant: StreamParticipant) -> None:
    """Process entry point: the same shell as every service (settings from the
    environment, JSON logs, uvloop, SIGTERM stops cleanly, a ready line)."""
    run_service(lambda settings: StreamService(participant, settings))


def faststream_app(participant: StreamParticipant, settings: Settings | None = None) -> FastStream:
    """The participant as a faststream application, for ``faststream run --factory``
    or ``faststream docs``: same broker, same start-up and shutdown."""
    service = StreamService(participant, settings or Settings.from_env())
    return FastStream(service.broker, on_startup=[service.prepare], after_shutdown=[service.close])
