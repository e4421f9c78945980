"""One robust AMQP connection per service: confirmed publishing and work-queue consumers."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import aio_pika
from aio_pika.exceptions import AMQPError, DeliveryError, PublishError

from orchestrator.errors import BrokerUnavailable, NotConnected

if TYPE_CHECKING:
    from aio_pika.abc import (
        AbstractExchange,
        AbstractQueue,
        AbstractRobustChannel,
        AbstractRobustConnection,
    )

    from orchestrator.messaging.topology import Topology

__all__ = ["Bus"]


class Bus:
    """Connects, declares the topology, and publishes with publisher confirms.

    Publishing to a named exchange is ``mandatory``: a message no queue would take raises
    instead of vanishing, so the caller keeps it (the outbox) and tries again.
    """

    def __init__(
        self, *, url: str, name: str, topology: Topology, publish_timeout: float = 15.0
    ) -> None:
        self.url = url
        self.name = name
        self.topology = topology
        self.publish_timeout = publish_timeout
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}

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
        """Connect (retrying until ``timeout``) and declare the whole topology."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                self._connection = await aio_pika.connect_robust(
                    self.url, client_properties={"connection_name": self.name}, timeout=10
                )
                break
            except (TimeoutError, OSError, AMQPError) as e:
                if loop.time() >= deadline:
                    raise BrokerUnavailable(
                        f"cannot reach RabbitMQ at {_safe(self.url)}: {e}"
                    ) from e
                await asyncio.sleep(0.5)
        channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        self._channel = channel
        await self.topology.declare(channel)
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
        try:
            await target.publish(
                message, routing_key=routing_key, mandatory=mandatory, timeout=self.publish_timeout
            )
        except (TimeoutError, DeliveryError, PublishError, AMQPError, OSError, RuntimeError) as e:
            raise BrokerUnavailable(
                f"publish to {exchange or '(default)'}/{routing_key} not confirmed: {e!r}"
            ) from e

    async def consumer_channel(self, *, prefetch: int) -> AbstractRobustChannel:
        """A new channel for a consumer, with its own prefetch."""
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        return channel

    async def queue(self, channel: AbstractRobustChannel, name: str) -> AbstractQueue:
        """A declared queue of this topology (declared with the same arguments)."""
        spec = next(q for q in self.topology.work_queues if q.name == name)
        return await channel.declare_queue(
            name, durable=True, arguments=self.topology.work_queue_arguments(spec)
        )

    async def close(self) -> None:
        """Close the connection; unacked deliveries go back to their queues."""
        if self._connection is not None:
            await self._connection.close()
        self._connection = None
        self._channel = None
        self._exchanges.clear()


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
