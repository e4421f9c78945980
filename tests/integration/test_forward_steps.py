"""Preparation for issue 16: capturing the payment and shipping the stock as commands
with replies (the retriable steps after the pivot), beside the event path they will
replace. Over the real broker and store: each command is idempotent, and the command
and the ``SagaCompleted`` event together still capture once and ship once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest

from contracts import (
    AuthorizePayment,
    CapturePayment,
    OrderLine,
    PaymentCaptured,
    SagaCompleted,
    ShipStock,
    StockShipped,
    decode,
)
from contracts.base import Message
from orchestrator.messaging.envelope import build_message
from tests.helpers import eventually
from tests.integration.conftest import System
from tests.rabbit import take_all

pytestmark = pytest.mark.integration

SAGA = "saga-forward"
REPLIES = "test-forward-replies"


@pytest.fixture
async def replies(system: System) -> AsyncIterator[list[Message]]:
    """Replies routed to ``REPLIES`` on the replies exchange, as they arrive."""
    received: list[Message] = []
    connection = await aio_pika.connect(system.settings.amqp_url)
    channel = await connection.channel()
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(system.settings.topology().replies_exchange, routing_key=REPLIES)

    async def keep(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            received.append(decode(message.type or "", message.body))

    await queue.consume(keep)
    yield received
    await connection.close()


async def send(system: System, command: Message, key: str, message_id: str) -> None:
    """Publish a command to a participant as the orchestrator would, replies to us."""
    message = build_message(command, message_id=message_id, correlation_id=SAGA, reply_to=REPLIES)
    await system.client.bus.publish(
        message, exchange=system.settings.topology().commands_exchange, routing_key=key
    )


async def complete_event(system: System) -> None:
    """The outcome event the participants react to today."""
    event = SagaCompleted(saga_name="order_fulfilment", reference="o-1")
    message = build_message(event, message_id=f"{SAGA}:completed", correlation_id=SAGA)
    await system.client.bus.publish(
        message,
        exchange=system.settings.topology().events_exchange,
        routing_key="order_fulfilment.completed",
    )


async def reserved_and_authorized(system: System) -> None:
    """The state at the pivot: stock reserved, payment authorized."""
    inventory, payments = system.inventory.inventory, system.payment.payments
    await inventory.set_stock("apple", 10)
    lines = (OrderLine(sku="apple", quantity=3),)
    assert (await inventory.reserve(SAGA, lines)).reserved
    authorize = AuthorizePayment(order_id="o-1", customer_id="c-1", amount_cents=4_200)
    assert (await payments.authorize(SAGA, authorize))["status"] == "authorized"


async def test_capture_and_ship_commands_and_the_event_settle_once(
    system: System, replies: list[Message]
) -> None:
    """Each command twice (a resend), then the outcome event: one capture, three units
    shipped once, and the same reply to every copy."""
    await reserved_and_authorized(system)

    for copy in ("first", "resent"):
        await send(system, CapturePayment(order_id="o-1"), "payment.capture_payment", "cap")
        await send(system, ShipStock(order_id="o-1"), "inventory.ship_stock", f"ship-{copy}")
    await complete_event(system)

    got = await eventually(lambda: _copy(replies), until=lambda r: len(r) == 4, what="four replies")
    assert sorted(got, key=lambda m: m.TYPE) == [
        StockShipped(order_id="o-1", units=3),
        StockShipped(order_id="o-1", units=3),
        PaymentCaptured(order_id="o-1", capture_id=f"cap-{SAGA}", amount_cents=4_200),
        PaymentCaptured(order_id="o-1", capture_id=f"cap-{SAGA}", amount_cents=4_200),
    ]
    apple = await system.levels("apple")
    assert (apple.available, apple.reserved, apple.shipped) == (7, 0, 3)
    payment = await system.payment_of(SAGA)
    assert payment is not None
    assert payment["status"] == "captured"


async def test_a_capture_of_a_voided_payment_is_dead_lettered_not_answered(
    system: System, replies: list[Message]
) -> None:
    """Nothing to capture: no reply saying it was captured; the command ends in the
    dead-letter queue after its retries, with the reason."""
    await reserved_and_authorized(system)
    await system.payment.payments.void(SAGA)

    await send(system, CapturePayment(order_id="o-1"), "payment.capture_payment", "cap-void")
    await send(system, ShipStock(order_id="o-1"), "inventory.ship_stock", "ship-ok")

    dlq = system.settings.topology().queue("payment.commands").dlq
    dead = await eventually(
        lambda: take_all(system.settings.amqp_url, dlq), until=bool, what="dead-lettered"
    )
    assert [m.message_id for m in dead] == ["cap-void"]
    headers = dead[0].headers
    assert (headers["x-error-reason"], headers["x-error-type"]) == (
        "retries_exhausted",
        "PaymentStateError",
    )
    assert "voided" in str(headers["x-error-message"])
    got = await eventually(lambda: _copy(replies), until=bool, what="the shipping reply")
    assert got == [StockShipped(order_id="o-1", units=3)]
    payment = await system.payment_of(SAGA)
    assert payment is not None
    assert payment["status"] == "voided"


async def _copy(items: list[Any]) -> list[Any]:
    return list(items)
