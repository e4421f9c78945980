"""A confirm the client library cancels (its channel closed with the publish in flight)
is a failed publish; a cancellation of the caller's own task stays a cancellation.

The library's behaviour is faked here (an exchange whose publish awaits a future that
gets cancelled), which a real broker cannot produce on demand; the failover test
(tests/integration/test_cluster_failover.py) shows it happen.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
import pytest

from orchestrator.errors import BrokerUnavailable
from orchestrator.messaging.publisher import ConfirmingPublisher


class _Exchange:
    def __init__(self) -> None:
        self.confirm: asyncio.Future[None] | None = None
        self.started = asyncio.Event()

    async def publish(self, message: aio_pika.Message, **_: Any) -> None:
        self.confirm = asyncio.get_running_loop().create_future()
        self.started.set()
        await self.confirm


class _Channel:
    def __init__(self, exchange: _Exchange) -> None:
        self.default_exchange = exchange
        self.is_closed = False

    async def get_exchange(self, name: str, *, ensure: bool) -> _Exchange:
        return self.default_exchange

    async def close(self) -> None:
        self.is_closed = True


class _Connection:
    def __init__(self) -> None:
        self.exchange = _Exchange()

    async def channel(self, **_: Any) -> _Channel:
        return _Channel(self.exchange)


async def _publisher() -> tuple[ConfirmingPublisher, _Exchange]:
    connection = _Connection()
    publisher = ConfirmingPublisher(connection, name="test")  # type: ignore[arg-type]
    await publisher.open()
    return publisher, connection.exchange


async def test_a_confirm_cancelled_by_the_library_is_a_failed_publish() -> None:
    publisher, exchange = await _publisher()
    publish = asyncio.create_task(
        publisher.publish(aio_pika.Message(b"x", message_id="m1"), exchange="", routing_key="q")
    )
    await exchange.started.wait()
    assert exchange.confirm is not None
    exchange.confirm.cancel()  # what the library does to confirms on a closing channel

    with pytest.raises(BrokerUnavailable, match="channel closed"):
        await publish
    # The id is free again: the next publish of it is not held behind the failed one.
    exchange.started.clear()
    again = asyncio.create_task(
        publisher.publish(aio_pika.Message(b"x", message_id="m1"), exchange="", routing_key="q")
    )
    await asyncio.wait_for(exchange.started.wait(), timeout=5)
    assert exchange.confirm is not None
    exchange.confirm.set_result(None)
    await again


async def test_cancelling_the_caller_stays_a_cancellation() -> None:
    publisher, exchange = await _publisher()
    publish = asyncio.create_task(
        publisher.publish(aio_pika.Message(b"x", message_id="m2"), exchange="", routing_key="q")
    )
    await exchange.started.wait()
    publish.cancel()

    with pytest.raises(asyncio.CancelledError):
        await publish
