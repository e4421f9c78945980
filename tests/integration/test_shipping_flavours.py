"""Shipping's delivery behaviour, run against both participant flavours: the aio-pika
``ShippingService`` and the faststream one (``participants.shipping.streams``).

Retries with ``x-attempt``, the dead-letter queue with the consumer's reason headers,
malformed input parked on its first attempt, replies routed to the command's
``reply_to`` as ``<command id>:reply``, idempotent redelivery, and fault injection: each
must be the same whichever kit the participant is written with.
"""

from __future__ import annotations

import json
from collections import Counter

import aio_pika
import pytest

from contracts import (
    CancelShipment,
    ReserveStock,
    ScheduleShipment,
    ShipmentScheduled,
    decode,
    encode,
)
from orchestrator.client import new_saga_id
from orchestrator.dev.harness import FaultsClient
from orchestrator.faults import FaultRule
from orchestrator.saga.state import EventType, Status
from tests.helpers import eventually
from tests.integration.conftest import SHIPPING_FLAVOURS, System, SystemFactory
from tests.rabbit import depth, take_all

pytestmark = pytest.mark.integration

DEAD_LETTER_HEADERS = {
    "x-attempt",
    "x-queue",
    "x-error-type",
    "x-error-message",
    "x-error-reason",
    "x-original-exchange",
    "x-original-routing-key",
    "x-first-failure-at",
    "x-last-failure-at",
}


@pytest.fixture(params=SHIPPING_FLAVOURS)
def shipping_flavour(request: pytest.FixtureRequest) -> str:
    """Every test here runs once per shipping flavour."""
    flavour: str = request.param
    return flavour


def faults_of(system: System) -> FaultsClient:
    """A fault-rule client on the system's broker connection and database."""
    return FaultsClient(bus=system.client.bus, database=system.inventory.db)


async def events_of(system: System, saga_id: str) -> list[tuple[EventType, str | None, int]]:
    """(type, step, attempt) of every event of the saga."""
    return [
        (e.type, e.step, e.attempt) for c in await system.client.history(saga_id) for e in c.events
    ]


async def test_transient_errors_are_retried_and_the_reply_says_how_many_attempts(
    make_system: SystemFactory,
) -> None:
    """Two injected errors in shipping, then the booking: completed, the third attempt in
    the saga's history (the reply's ``x-handler-attempts``), one shipment."""
    system = await make_system(faults_enabled=True)
    await system.inventory.inventory.set_stock("apple", 5)
    rule = FaultRule(participant="shipping", command="schedule_shipment", action="raise", count=2)
    await faults_of(system).install(rule, listeners=3)

    saga_id = await system.order(("apple", 1))

    assert (await system.settle(saga_id)).status is Status.COMPLETED
    assert (EventType.STEP_SUCCEEDED, "schedule_shipment", 3) in await events_of(system, saga_id)
    assert await faults_of(system).fired() == Counter({"raise": 2})
    shipment = await system.shipment_of(saga_id)
    assert shipment is not None
    assert shipment["status"] == "scheduled"
    await system.invariants({"apple": 5}, [saga_id])


async def test_a_command_failing_every_attempt_is_dead_lettered_with_the_reason(
    make_system: SystemFactory,
) -> None:
    """Shipping always fails: after exactly 3 attempts the command is in the shipping
    dead-letter queue with the consumer's headers; the saga times the step out and
    compensates (payment voided, stock released)."""
    system = await make_system(
        faults_enabled=True, retry_delays=(0.1, 0.2), step_timeout=2.0, step_max_sends=1
    )
    await system.inventory.inventory.set_stock("apple", 5)
    rule = FaultRule(participant="shipping", command="schedule_shipment", action="raise")
    await faults_of(system).install(rule, listeners=3)
    topology = system.settings.topology()
    dlq = topology.queue("shipping.commands").dlq

    saga_id = await system.order(("apple", 2))
    state = await system.settle(saga_id)

    assert (state.status, state.failed_step) == (Status.COMPENSATED, "schedule_shipment")
    dead = await eventually(
        lambda: take_all(system.settings.amqp_url, dlq), until=bool, what="a dead-lettered command"
    )
    assert len(dead) == 1
    headers = dead[0].headers
    assert set(headers) >= DEAD_LETTER_HEADERS
    assert headers["x-attempt"] == 3
    assert headers["x-queue"] == topology.queue("shipping.commands").name
    assert headers["x-error-reason"] == "retries_exhausted"
    assert headers["x-error-type"] == "InjectedFault"
    assert headers["x-original-exchange"] == topology.commands_exchange
    assert headers["x-original-routing-key"] == "shipping.schedule_shipment"
    assert headers["x-first-failure-at"] <= headers["x-last-failure-at"]
    assert "x-death" not in headers
    assert (dead[0].correlation_id, dead[0].type) == (saga_id, ScheduleShipment.TYPE)
    assert dead[0].delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    marker = await system.shipment_of(saga_id)  # the timed-out step is compensated too
    assert marker is not None
    assert (marker["status"], marker["shipment_id"]) == ("cancelled", "")
    payment = await system.payment_of(saga_id)
    assert payment is not None
    assert payment["status"] == "voided"
    await system.invariants({"apple": 5}, [saga_id])


MALFORMED = {
    "undecodable": (b"{not json", ScheduleShipment.TYPE, "s1"),
    "unknown_type": (b"{}", "shipping.teleport_parcel.v1", "s1"),
    "schema_violation": (json.dumps({"units": "many"}).encode(), ScheduleShipment.TYPE, "s1"),
    "missing_correlation_id": (
        encode(ScheduleShipment(order_id="o", ship_to="1 Main Street", units=1)),
        ScheduleShipment.TYPE,
        None,
    ),
    "too_large": (b"x" * 20_000, ScheduleShipment.TYPE, "s1"),
}


async def test_malformed_commands_go_straight_to_the_dead_letter_queue(
    make_system: SystemFactory,
) -> None:
    """Each kind of malformed command, and a valid contract shipping has no handler for,
    lands in the shipping dead-letter queue on its first attempt with its reason; the
    handler never runs and good orders still complete."""
    system = await make_system(max_body_bytes=16_384)
    await system.inventory.inventory.set_stock("apple", 5)
    topology = system.settings.topology()
    stray = ReserveStock.model_validate({"order_id": "o", "lines": [{"sku": "a", "quantity": 1}]})
    cases = {**MALFORMED, "no_handler": (encode(stray), ReserveStock.TYPE, "s1")}
    connection = await aio_pika.connect(system.settings.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(topology.commands_exchange)
        for name, (body, kind, saga) in cases.items():
            message = aio_pika.Message(
                body, type=kind, correlation_id=saga, message_id=f"malformed-{name}"
            )
            await exchange.publish(message, routing_key="shipping.schedule_shipment")

    dlq = topology.queue("shipping.commands").dlq
    await eventually(
        lambda: depth(system.settings.amqp_url, dlq),
        until=lambda n: n >= len(cases),
        what="all malformed dead-lettered",
    )
    saga_id = await system.order(("apple", 1))
    assert (await system.settle(saga_id)).status is Status.COMPLETED

    dead = await take_all(system.settings.amqp_url, dlq)
    reasons = {m.message_id: m.headers["x-error-reason"] for m in dead}
    expected = {f"malformed-{r}": r for r in MALFORMED} | {"malformed-no_handler": "unknown_type"}
    assert reasons == expected
    assert all(m.headers["x-attempt"] == 1 for m in dead)
    assert all(m.headers["x-error-message"] for m in dead)
    assert await system.shipment_of("s1") is None
    await system.invariants({"apple": 5}, [saga_id])


async def test_the_reply_goes_to_reply_to_with_the_derived_id_and_redelivery_books_once(
    system: System,
) -> None:
    """A command published twice with one message id gets two identical replies, each
    ``<command id>:reply`` on the replies exchange under ``reply_to``, with the causation
    and attempt headers; the shipment is booked once. A cancel is then acknowledged."""
    topology = system.settings.topology()
    saga_id = new_saga_id()
    command = ScheduleShipment(order_id="o-1", ship_to="1 Main Street", units=2)
    connection = await aio_pika.connect(system.settings.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        replies = await channel.declare_queue(exclusive=True, auto_delete=True)
        await replies.bind(topology.replies_exchange, routing_key=f"probe-{saga_id[:8]}")
        commands = await channel.get_exchange(topology.commands_exchange)
        for kind, body, message_id in (
            (ScheduleShipment, command, "cmd-1"),
            (ScheduleShipment, command, "cmd-1"),
            (CancelShipment, CancelShipment(order_id="o-1"), "cmd-2"),
        ):
            message = aio_pika.Message(
                encode(body),
                type=kind.TYPE,
                correlation_id=saga_id,
                message_id=message_id,
                reply_to=f"probe-{saga_id[:8]}",
            )
            await commands.publish(message, routing_key=f"shipping.{kind.TYPE.split('.')[1]}")
            if message_id == "cmd-1":  # the second copy arrives after the first is stored
                await eventually(lambda: system.shipment_of(saga_id), what="shipment booked")
        got: list[aio_pika.abc.AbstractIncomingMessage] = []
        async with replies.iterator(timeout=30) as stream:
            async for reply in stream:
                await reply.ack()
                got.append(reply)
                if len(got) == 3:
                    break

    ids = [m.message_id for m in got]
    assert ids == ["cmd-1:reply", "cmd-1:reply", "cmd-2:reply"]
    booked = [decode(m.type, m.body) for m in got[:2]]
    expected = ShipmentScheduled(order_id="o-1", shipment_id=f"ship-{saga_id}")
    assert booked[0] == booked[1] == expected
    assert got[2].type == "shipping.shipment_cancelled.v1"
    for m in got:
        assert m.correlation_id == saga_id
        assert m.headers["x-handler-attempts"] == 1
        assert m.headers["x-causation-id"] == m.message_id.removesuffix(":reply")
        assert m.app_id == "shipping"
        assert m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    shipment = await system.shipment_of(saga_id)
    assert shipment is not None
    assert shipment["status"] == "cancelled"


async def test_an_injected_decline_replies_the_refusal_without_running_the_handler(
    make_system: SystemFactory,
) -> None:
    """A decline rule on shipping: no shipment is booked, the refusal is the reply, the
    saga compensates payment then stock with the rule's reason."""
    system = await make_system(faults_enabled=True)
    await system.inventory.inventory.set_stock("apple", 5)
    rule = FaultRule(
        participant="shipping", command="schedule_shipment", action="decline", reason="no vans"
    )
    await faults_of(system).install(rule, listeners=3)

    saga_id = await system.order(("apple", 1))
    state = await system.settle(saga_id)

    assert (state.status, state.failed_step, state.reason) == (
        Status.COMPENSATED,
        "schedule_shipment",
        "no vans",
    )
    assert await system.shipment_of(saga_id) is None
    assert await faults_of(system).fired() == Counter({"decline": 1})
    await system.invariants({"apple": 5}, [saga_id])
