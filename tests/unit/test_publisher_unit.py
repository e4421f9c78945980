"""The confirming publisher's handling of what a real broker cannot produce on demand
(the failover test, tests/integration/test_cluster_failover.py, shows each happen), with
the client library faked:

* a confirm the library cancels (its channel closed with the publish in flight) is a
  failed publish; a cancellation of the caller's own task stays a cancellation;
* a publish of an id waiting behind one that was nacked goes out on the new channel;
* a channel that cannot be opened is tried once, not once per nacked publish.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
import pytest
from aio_pika.exceptions import DeliveryError

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


class _NackFrame:
    name = "Basic.Nack"


class _Nacking:
    """Exchange of a channel that nacks every publish (and records what it carried)."""

    def __init__(self, log: list[tuple[int, bytes]], number: int, *, nacks: bool) -> None:
        self.log, self.number, self.nacks = log, number, nacks

    async def publish(self, message: aio_pika.Message, **_: Any) -> None:
        self.log.append((self.number, message.body))
        await asyncio.sleep(0.01)  # the confirm takes a moment: a second publish waits
        if self.nacks:
            raise DeliveryError(None, _NackFrame())  # type: ignore[arg-type]


class _Channels:
    """Channel 1 nacks; the ones opened after it accept (or, ``opens_fail``, none opens)."""

    def __init__(self, *, opens_fail: bool = False) -> None:
        self.carried: list[tuple[int, bytes]] = []
        self.opened = 0
        self.opens_fail = opens_fail

    async def channel(self, **_: Any) -> _Channel:
        self.opened += 1
        if self.opens_fail and self.opened > 1:
            raise ConnectionError("no answer")
        return _Channel(_Nacking(self.carried, self.opened, nacks=self.opened == 1))  # type: ignore[arg-type]


async def test_a_publish_of_an_id_waiting_behind_a_nacked_one_goes_on_the_new_channel() -> None:
    connection = _Channels()
    publisher = ConfirmingPublisher(connection, name="test")  # type: ignore[arg-type]
    await publisher.open()

    first = asyncio.create_task(
        publisher.publish(aio_pika.Message(b"a", message_id="x"), exchange="", routing_key="q")
    )
    await asyncio.sleep(0)
    second = asyncio.create_task(
        publisher.publish(aio_pika.Message(b"b", message_id="x"), exchange="", routing_key="q")
    )

    with pytest.raises(BrokerUnavailable, match="Nack"):
        await first
    await second
    assert connection.carried == [(1, b"a"), (2, b"b")]
    await publisher.close()


async def test_a_channel_that_cannot_be_opened_is_tried_once_for_many_nacks() -> None:
    connection = _Channels(opens_fail=True)
    publisher = ConfirmingPublisher(connection, name="test")  # type: ignore[arg-type]
    await publisher.open()

    results = await asyncio.gather(
        *(
            publisher.publish(
                aio_pika.Message(b"m", message_id=f"m{n}"), exchange="", routing_key="q"
            )
            for n in range(6)
        ),
        return_exceptions=True,
    )

    assert all(isinstance(r, BrokerUnavailable) for r in results), results
    assert connection.opened == 2  # the first channel, and one try at a new one
    assert publisher.renewed == 0
