"""One robust AMQP connection per service: confirmed publishing and work-queue consumers.

The connection goes to any live node of ``AMQP_URL`` (one URL or a comma-separated
cluster list) and fails over on its own (``orchestrator.messaging.connection``).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import aio_pika
from aio_pika.exceptions import AMQPError, DeliveryError, PublishError

from orchestrator.errors import BrokerUnavailable, NotConnected
from orchestrator.messaging.connection import TlsRefused, connect_amqp, safe_url, split_urls
from orchestrator.observability.metrics import watch_reconnects

if TYPE_CHECKING:
    import ssl

    from aio_pika.abc import (
        AbstractExchange,
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
        self._channel: AbstractRobustChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._in_flight: dict[str, asyncio.Event] = {}
        """Message ids being published now, each set when its publish settles."""

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
        channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        self._channel = channel
        await self.topology.prepare(self._connection)
        for name in (
            self.topology.commands_exchange,
            self.topology.replies_exchange,
            self.topology.events_exchange,
        ):
            self._exchanges[name] = await channel.get_exchange(name, ensure=False)
        self._exchanges[""] = channel.default_exchange

    async def publish(
        self, message: aio_pika.Message, *, exchange: str, routing_key: str, mandatory: bool = True
    ) -> None:
        """Publish and wait for the broker's confirm; raise :class:`BrokerUnavailable` if
        the broker refuses, returns or does not confirm it."""
        if self._channel is None:
            raise NotConnected(f"bus {self.name!r} is not connected; call connect() first")
        target = self._exchanges.get(exchange)
        if target is None:
            target = await self._channel.get_exchange(exchange, ensure=False)
            self._exchanges[exchange] = target
        # The client library matches a returned message to its publish by message id: with
        # one id in flight twice (a relay republish beside the dispatch), a return would
        # fail the other publish and let the returned one count as confirmed. So a second
        # publish of an id waits for the first to settle.
        message_id = message.message_id
        while message_id and (earlier := self._in_flight.get(message_id)) is not None:
            await earlier.wait()
        settled = asyncio.Event()
        if message_id:
            self._in_flight[message_id] = settled
        try:
            await target.publish(
                message, routing_key=routing_key, mandatory=mandatory, timeout=self.publish_timeout
            )
        except (TimeoutError, DeliveryError, PublishError, AMQPError, OSError, RuntimeError) as e:
            raise BrokerUnavailable(
                f"publish to {exchange or '(default)'}/{routing_key} not confirmed: {e!r}"
            ) from e
        finally:
            if message_id and self._in_flight.get(message_id) is settled:
                del self._in_flight[message_id]
            settled.set()

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
        self._channel = None
        self._exchanges.clear()
