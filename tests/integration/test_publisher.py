"""The confirming publisher against a real broker: a nack fails the publish and replaces
the channel (the failover test shows why: a channel can go on nacking after a cluster
node dies), once however many publishes saw it; the next publish goes through, and the
publishes the old channel carried to other queues are not failed by the replacement.

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
from tests.helpers import eventually

if TYPE_CHECKING:
    from aio_pika.abc import AbstractRobustConnection

    from orchestrator.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
async def connection(settings: Settings) -> AsyncIterator[AbstractRobustConnection]:
    """A connection, with a full queue (``<ns>.full``, it nacks every publish) and an
    open quorum queue (``<ns>.open``)."""
    conn = await connect_amqp(settings.amqp_urls, name=f"{settings.namespace}.publisher-test")
    channel = await conn.channel()
    full = await channel.declare_queue(
        f"{settings.namespace}.full",
        arguments={"x-max-length": 1, "x-overflow": "reject-publish"},
    )
    await channel.default_exchange.publish(aio_pika.Message(b"first"), routing_key=full.name)
    opened = await channel.declare_queue(
        f"{settings.namespace}.open", durable=True, arguments={"x-queue-type": "quorum"}
    )
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
    publisher = ConfirmingPublisher(connection, name="test", timeout=1.0)
    await publisher.open()
    refused = publisher._channel
    assert refused is not None

    with pytest.raises(BrokerUnavailable, match="Nack"):
        await publisher.publish(message(1), exchange="", routing_key=f"{settings.namespace}.full")

    assert publisher.renewed == 1
    assert publisher._channel is not refused
    await publisher.publish(message(2), exchange="", routing_key=f"{settings.namespace}.open")
    channel = await connection.channel()
    queue = await channel.declare_queue(f"{settings.namespace}.open", passive=True)
    got = await queue.get(timeout=5)
    assert got.body == b"m2"
    # The replaced channel is closed once its publishes had their time (1 s here).
    await eventually(lambda: _closed(refused), timeout=10, what="the replaced channel closed")
    await publisher.close()


async def _closed(channel: object) -> bool:
    return bool(getattr(channel, "is_closed", False))


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


async def test_a_same_id_publish_waiting_behind_a_nacked_one_goes_on_the_new_channel(
    connection: AbstractRobustConnection, settings: Settings
) -> None:
    """The second publish of an id waits for the first; the first's nack replaces the
    channel, and the second must use the new one (it used to fail on the old)."""
    publisher = ConfirmingPublisher(connection, name="test")
    await publisher.open()
    first = asyncio.create_task(
        publisher.publish(
            aio_pika.Message(b"a", message_id="x"),
            exchange="",
            routing_key=f"{settings.namespace}.full",
        )
    )
    await asyncio.sleep(0)  # the first holds the id and waits for its confirm
    second = asyncio.create_task(
        publisher.publish(
            aio_pika.Message(b"b", message_id="x"),
            exchange="",
            routing_key=f"{settings.namespace}.open",
        )
    )

    with pytest.raises(BrokerUnavailable, match="Nack"):
        await first
    await second

    assert publisher.renewed == 1
    await publisher.close()


async def test_a_nack_for_one_queue_does_not_fail_publishes_to_another(
    connection: AbstractRobustConnection, settings: Settings
) -> None:
    """One queue refusing replaces the channel; the publishes to a healthy queue that
    were waiting for their confirms on the old one are confirmed all the same (closing
    the old channel at once failed some of them: duplicates, when they were sent again)."""
    publisher = ConfirmingPublisher(connection, name="test")
    await publisher.open()
    refused = asyncio.create_task(
        publisher.publish(
            aio_pika.Message(b"n", message_id="n"),
            exchange="",
            routing_key=f"{settings.namespace}.full",
        )
    )
    await asyncio.sleep(0)
    healthy = [
        publisher.publish(
            aio_pika.Message(b"x" * 1000, message_id=f"o{i}", delivery_mode=2),
            exchange="",
            routing_key=f"{settings.namespace}.open",
        )
        for i in range(1000)
    ]

    results = await asyncio.gather(*healthy, return_exceptions=True)

    with pytest.raises(BrokerUnavailable):
        await refused
    failed = [r for r in results if isinstance(r, BaseException)]
    assert not failed, f"{len(failed)} of 1000 healthy publishes failed: {failed[0]!r}"
    await publisher.close()
