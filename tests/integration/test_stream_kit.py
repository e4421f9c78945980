"""The faststream participant kit on the real broker, with participants written here:
a command in hand when the process dies is redelivered (acked only after its effect),
handlers see their attempt number, and a command nobody waits on is acked quietly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from contracts import ScheduleShipment, ShipmentScheduled, decode, encode
from orchestrator.client import new_saga_id
from orchestrator.settings import Settings
from participants.kit.streams import Attempt, SagaId, StreamParticipant, StreamService
from participants.shipping import MongoShipments
from participants.shipping.streams import shipping
from tests.helpers import eventually
from tests.rabbit import depth, take_all

pytestmark = pytest.mark.integration

COMMAND = ScheduleShipment(order_id="o-1", ship_to="1 Main Street", units=1)
Publish = Callable[..., Awaitable[None]]
"""``await publish(saga_id, message_id, reply_to=...)``: one ScheduleShipment."""


@asynccontextmanager
async def probe(settings: Settings, key: str) -> AsyncIterator[tuple[AbstractQueue, Publish]]:
    """A reply queue bound to the replies exchange under ``key``, and a publisher of
    ScheduleShipment commands that name it as their ``reply_to`` (a service has
    declared the topology)."""
    topology = settings.topology()
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        replies = await channel.declare_queue(exclusive=True, auto_delete=True)
        await replies.bind(topology.replies_exchange, routing_key=key)
        commands = await channel.get_exchange(topology.commands_exchange)

        async def publish(saga_id: str, message_id: str, reply_to: str | None = key) -> None:
            message = aio_pika.Message(
                encode(COMMAND),
                type=ScheduleShipment.TYPE,
                correlation_id=saga_id,
                message_id=message_id,
                reply_to=reply_to,
            )
            await commands.publish(message, routing_key="shipping.schedule_shipment")

        yield replies, publish


async def next_reply(queue: AbstractQueue, timeout: float = 30.0) -> AbstractIncomingMessage:
    """The next message on ``queue`` (acked), or fail after ``timeout``."""
    async with queue.iterator(timeout=timeout) as stream:
        async for message in stream:
            await message.ack()
            return message
    raise AssertionError("no reply")


async def test_a_command_in_hand_when_the_process_dies_is_redelivered_and_booked_once(
    settings: Settings,
) -> None:
    """The first instance dies while its handler holds the command (nothing acked): the
    broker redelivers it to the next instance, which books and replies once."""
    entered, release = asyncio.Event(), asyncio.Event()
    stuck = StreamParticipant(service="shipping")

    @stuck.command(ScheduleShipment)
    async def held(command: ScheduleShipment, saga_id: SagaId) -> ShipmentScheduled:
        entered.set()
        await release.wait()
        return ShipmentScheduled(order_id=command.order_id, shipment_id="never-sent")

    saga_id = new_saga_id()
    first = StreamService(stuck, settings, instance="first")
    second = StreamService(shipping, settings, instance="second")
    await first.start()
    async with probe(settings, "probe") as (replies, publish):
        await publish(saga_id, "cmd-1")
        await asyncio.wait_for(entered.wait(), timeout=30)
        await first.kill()
        await second.start()
        try:
            reply = await next_reply(replies)
            store = MongoShipments(database=second.db, undeliverable=())
            shipment = await store.get(saga_id)
        finally:
            release.set()
            await second.stop()

    assert reply.message_id == "cmd-1:reply"
    assert decode(reply.type, reply.body) == ShipmentScheduled(
        order_id="o-1", shipment_id=f"ship-{saga_id}"
    )
    assert shipment is not None
    assert shipment["status"] == "scheduled"


async def test_a_handler_sees_its_attempt_and_a_retried_command_replies_once(
    settings: Settings,
) -> None:
    """The handler fails on attempt 1 and succeeds on attempt 2 (from the retry tier):
    it saw attempts [1, 2] through ``Attempt``, and the reply says 2 attempts."""
    seen: list[int] = []
    flaky = StreamParticipant(service="shipping")

    @flaky.command(ScheduleShipment)
    async def book(command: ScheduleShipment, attempt: Attempt) -> ShipmentScheduled:
        seen.append(attempt)
        if attempt == 1:
            raise RuntimeError("carrier API timed out")
        return ShipmentScheduled(order_id=command.order_id, shipment_id="s-1")

    service = StreamService(flaky, settings)
    await service.start()
    async with probe(settings, "probe") as (replies, publish):
        try:
            await publish(new_saga_id(), "cmd-1")
            reply = await next_reply(replies)
        finally:
            await service.stop()

    assert seen == [1, 2]
    assert reply.headers["x-handler-attempts"] == 2
    assert reply.message_id == "cmd-1:reply"


async def test_a_command_without_reply_to_is_acked_after_its_effect(settings: Settings) -> None:
    """A raw publish with no ``reply_to``: the shipment is booked, the command acked, and
    nothing is dead-lettered or left in the queue."""
    service = StreamService(shipping, settings)
    topology = settings.topology()
    saga_id = new_saga_id()
    await service.start()
    async with probe(settings, "probe") as (_replies, publish):
        try:
            await publish(saga_id, "cmd-1", reply_to=None)
            store = MongoShipments(database=service.db, undeliverable=())
            await eventually(lambda: store.get(saga_id), what="shipment booked")
            queue = topology.queue("shipping.commands")
            await eventually(
                lambda: depth(settings.amqp_url, queue.name), until=lambda n: n == 0, what="acked"
            )
        finally:
            await service.stop()
    assert await depth(settings.amqp_url, queue.dlq) == 0
    assert service.replies_sent == 0


async def test_a_delivery_faststream_fails_before_the_handler_is_parked_not_left_unacked(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If faststream itself fails on a delivery before the handler (here a filter that
    raises), the middleware dead-letters it instead of leaving it unacked in the queue."""

    def broken_filter(kind: object) -> object:
        del kind

        async def explode(msg: object) -> bool:
            raise RuntimeError("filter exploded")

        return explode

    monkeypatch.setattr("participants.kit.streams.service._is", broken_filter)
    service = StreamService(shipping, settings)
    topology = settings.topology()
    queue = topology.queue("shipping.commands")
    await service.start()
    async with probe(settings, "probe") as (_replies, publish):
        try:
            await publish(new_saga_id(), "cmd-1")
            dead = await eventually(
                lambda: take_all(settings.amqp_url, queue.dlq), until=bool, what="parked"
            )
            assert await depth(settings.amqp_url, queue.name) == 0
        finally:
            await service.stop()
    assert [m.message_id for m in dead] == ["cmd-1"]
    assert dead[0].headers["x-error-reason"] == "undecodable"
    assert dead[0].headers["x-error-type"] == "RuntimeError"
    assert "filter exploded" in str(dead[0].headers["x-error-message"])
