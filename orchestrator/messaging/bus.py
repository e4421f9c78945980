"""One robust AMQP connection per service: confirmed publishing and work-queue consumers.

The connection goes to any live node of ``AMQP_URL`` (one URL or a comma-separated
cluster list) and fails over on its own (``orchestrator.messaging.connection``).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import aio_pika
from aio_pika.exceptions import AMQPError

from orchestrator.errors import BrokerUnavailable, NotConnected
from orchestrator.messaging.connection import TlsRefused, connect_amqp, safe_url, split_urls
from orchestrator.messaging.publisher import ConfirmingPublisher
from orchestrator.observability.metrics import watch_reconnects

if TYPE_CHECKING:
    import ssl

    from aio_pika.abc import (
        AbstractQueue,
        AbstractRobustChannel,
        AbstractRobustConnection,
    )

    from orchestrator.messaging.topology import Topology
    from orchestrator.settings import Settings

__all__ = ["Bus"]


class Bus:
    """Connects, declares the topology, and publishes with publisher confirms.

    Publishing to a named exchange is ``mandatory``: a message no queue would take raises
    instead of vanishing, so the caller keeps it (the outbox) and tries again.
    Publishing goes through a :class:`ConfirmingPublisher` (one publish of a message id
    at a time; a channel the broker nacks is replaced).
    """

    def __init__(
        self,
        *,
        url: str,
        name: str,
        topology: Topology,
        publish_timeout: float = 15.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.url = url
        """One node's URL, or several comma-separated (a cluster)."""
        self.urls = split_urls(url)
        self.ssl_context = ssl_context
        self.name = name
        self.topology = topology
        self.publish_timeout = publish_timeout
        self._connection: AbstractRobustConnection | None = None
        self._publisher: ConfirmingPublisher | None = None

    @classmethod
    def of(cls, settings: Settings, *, name: str, topology: Topology | None = None) -> Bus:
        """A bus on the deployment's broker nodes, with its TLS settings."""
        return cls(
            url=settings.amqp_url,
            name=name,
            topology=topology or settings.topology(),
            ssl_context=settings.amqp_ssl_context(),
        )

    @property
    def connection(self) -> AbstractRobustConnection:
        """The live connection; raises :class:`NotConnected` before :meth:`connect`."""
        if self._connection is None:
            raise NotConnected(f"bus {self.name!r} is not connected; call connect() first")
        return self._connection

    @property
    def connected(self) -> bool:
        """Whether :meth:`connect` succeeded and :meth:`close` has not been called."""
        return self._connection is not None

    async def connect(self, *, timeout: float = 30.0) -> None:
        """Connect to the first node that answers (retrying until ``timeout``) and declare
        the whole topology (or check it, see :meth:`Topology.prepare`). A TLS failure is
        not retried (:class:`TlsRefused`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                self._connection = await connect_amqp(
                    self.urls, name=self.name, ssl_context=self.ssl_context, timeout=10
                )
                watch_reconnects(self._connection, self.name)
                break
            except TlsRefused:
                raise
            except (TimeoutError, OSError, AMQPError) as e:
                if loop.time() >= deadline:
                    where = ", ".join(safe_url(u) for u in self.urls)
                    raise BrokerUnavailable(f"cannot reach RabbitMQ at {where}: {e}") from e
                await asyncio.sleep(0.5)
        publisher = ConfirmingPublisher(
            self._connection,
            name=self.name,
            exchanges=(
                self.topology.commands_exchange,
                self.topology.replies_exchange,
                self.topology.events_exchange,
            ),
            timeout=self.publish_timeout,
        )
        await publisher.open()
        self._publisher = publisher
        await self.topology.prepare(self._connection)

    @property
    def publisher(self) -> ConfirmingPublisher:
        """The confirming publisher; raises :class:`NotConnected` before :meth:`connect`."""
        if self._publisher is None:
            raise NotConnected(f"bus {self.name!r} is not connected; call connect() first")
        return self._publisher

    async def publish(
        self, message: aio_pika.Message, *, exchange: str, routing_key: str, mandatory: bool = True
    ) -> None:
        """Publish and wait for the broker's confirm; raise :class:`BrokerUnavailable` if
        the broker refuses, returns or does not confirm it."""
        await self.publisher.publish(
            message, exchange=exchange, routing_key=routing_key, mandatory=mandatory
        )

    async def consumer_channel(self, *, prefetch: int) -> AbstractRobustChannel:
        """A new channel for a consumer, with its own prefetch."""
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        return channel

    async def queue(self, channel: AbstractRobustChannel, name: str) -> AbstractQueue:
        """A declared queue of this topology (declared with the same arguments)."""
        spec = next(q for q in self.topology.work_queues if q.name == name)
        return await self.topology.open_queue(channel, spec)

    async def close(self) -> None:
        """Close the connection; unacked deliveries go back to their queues."""
        if self._connection is not None:
            await self._connection.close()
        self._connection = None
        self._publisher = None
