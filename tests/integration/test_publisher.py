"""The confirming publisher against a real broker: a nack fails the publish and replaces
the channel (the failover test shows why: a channel can go on nacking after a cluster
node dies), once however many publishes saw it; the next publish goes through.

The broker nacks here for a reason of its own: a queue that is full with
``x-overflow: reject-publish`` refuses the message.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aio_pika
import pytest

from orchestrator.errors import BrokerUnavailable
from orchestrator.messaging.connection import connect_amqp
from orchestrator.messaging.publisher import ConfirmingPublisher

if TYPE_CHECKING:
    from aio_pika.abc import AbstractRobustConnection

    from orchestrator.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
async def connection(settings: Settings) -> AsyncIterator[AbstractRobustConnection]:
    """A connection, with a full queue (``<ns>.full``) and an open one (``<ns>.open``)."""
    conn = await connect_amqp(settings.amqp_urls, name=f"{settings.namespace}.publisher-test")
    channel = await conn.channel()
    full = await channel.declare_queue(
        f"{settings.namespace}.full",
        arguments={"x-max-length": 1, "x-overflow": "reject-publish"},
    )
    await channel.default_exchange.publish(aio_pika.Message(b"first"), routing_key=full.name)
    opened = await channel.declare_queue(f"{settings.namespace}.open")
    try:
        yield conn
    finally:
        await full.delete(if_unused=False, if_empty=False)
        await opened.delete(if_unused=False, if_empty=False)
        await conn.close()


def message(n: int) -> aio_pika.Message:
    return aio_pika.Message(f"m{n}".encode(), message_id=f"m{n}")


async def test_a_nack_fails_the_publish_and_the_next_one_goes_on_a_new_channel(
    connection: AbstractRobustConnection, settings: Settings
) -> None:
    publisher = ConfirmingPublisher(connection, name="test")
    await publisher.open()
    refused = publisher._channel
    assert refused is not None

    with pytest.raises(BrokerUnavailable, match="Nack"):
        await publisher.publish(message(1), exchange="", routing_key=f"{settings.namespace}.full")

    assert publisher.renewed == 1
    assert publisher._channel is not refused
    assert refused.is_closed
    await publisher.publish(message(2), exchange="", routing_key=f"{settings.namespace}.open")
    channel = await connection.channel()
    queue = await channel.declare_queue(f"{settings.namespace}.open", passive=True)
    got = await queue.get(timeout=5)
    assert got.body == b"m2"
    await publisher.close()


async def test_publishes_nacked_together_renew_the_channel_once(
    connection: AbstractRobustConnection, settings: Settings
) -> None:
    publisher = ConfirmingPublisher(connection, name="test")
    await publisher.open()

    results = await asyncio.gather(
        *(
            publisher.publish(message(n), exchange="", routing_key=f"{settings.namespace}.full")
            for n in range(5)
        ),
        return_exceptions=True,
    )

    assert all(isinstance(r, BrokerUnavailable) for r in results), results
    assert publisher.renewed == 1
    await publisher.publish(message(9), exchange="", routing_key=f"{settings.namespace}.open")
    await publisher.close()
