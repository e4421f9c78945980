"""Retry tiers, dead-letter queues and malformed input, on the real broker."""

from __future__ import annotations

import json

import aio_pika
import pytest

from contracts import AuthorizePayment, ReserveStock
from orchestrator.saga.state import EventType, Status
from tests.faults import Broken, Flaky
from tests.helpers import eventually
from tests.integration.conftest import System, SystemFactory
from tests.rabbit import depth, take_all

pytestmark = pytest.mark.integration


async def test_handler_failing_twice_is_retried_and_attempts_are_recorded(system: System) -> None:
    """A participant raises twice, then succeeds: the saga completes and the third attempt
    shows in its history."""
    await system.inventory.inventory.set_stock("apple", 5)
    system.inventory.on_command(ReserveStock, Flaky(system.inventory.reserve, failures=2))

    saga_id = await system.order(("apple", 2))
    state = await system.settle(saga_id)

    assert state.status is Status.COMPLETED
    history = await system.client.history(saga_id)
    reserved = [
        e
        for c in history
        for e in c.events
        if e.type is EventType.STEP_SUCCEEDED and e.step == "reserve_stock"
    ]
    assert [e.attempt for e in reserved] == [3]
    await system.invariants({"apple": 5}, [saga_id])


async def test_handler_always_failing_dead_letters_after_n_attempts(
    make_system: SystemFactory,
) -> None:
    """Payment always raises: after exactly 3 attempts the command is in the payment
    dead-letter queue with complete headers, and the saga times the step out and
    compensates (stock released, nothing authorized)."""
    system = await make_system(retry_delays=(0.1, 0.2), step_timeout=2.0, step_max_sends=1)
    await system.inventory.inventory.set_stock("apple", 5)
    system.payment.on_command(AuthorizePayment, Broken(system.payment.authorize))
    dlq = system.settings.topology().queue("payment.commands").dlq

    saga_id = await system.order(("apple", 2))
    state = await system.settle(saga_id)

    assert state.status is Status.COMPENSATED
    assert state.failed_step == "authorize_payment"
    dead = await eventually(
        lambda: take_all(system.settings.amqp_url, dlq), until=bool, what="a dead-lettered command"
    )
    assert len(dead) == 1
    headers = dead[0].headers
    assert headers["x-attempt"] == 3
    assert headers["x-error-reason"] == "retries_exhausted"
    assert headers["x-error-type"] == "InjectedFault"
    assert "injected permanent failure" in str(headers["x-error-message"])
    assert headers["x-original-exchange"] == system.settings.topology().commands_exchange
    assert headers["x-original-routing-key"] == "payment.authorize_payment"
    assert headers["x-first-failure-at"] <= headers["x-last-failure-at"]
    assert dead[0].correlation_id == saga_id
    assert dead[0].type == AuthorizePayment.TYPE
    await system.invariants({"apple": 5}, [saga_id])


MALFORMED = {
    "undecodable": {"body": b"{not json", "type": ReserveStock.TYPE, "correlation_id": "s1"},
    "unknown_type": {"body": b"{}", "type": "inventory.teleport_stock.v1", "correlation_id": "s1"},
    "schema_violation": {
        "body": json.dumps({"order_id": "o", "lines": []}).encode(),
        "type": ReserveStock.TYPE,
        "correlation_id": "s1",
    },
    "missing_correlation_id": {
        "body": json.dumps({"order_id": "o", "lines": [{"sku": "apple", "quantity": 1}]}).encode(),
        "type": ReserveStock.TYPE,
        "correlation_id": None,
    },
    "too_large": {"body": b"x" * 20_000, "type": ReserveStock.TYPE, "correlation_id": "s1"},
}
# Bodies under the size limit that json.loads cannot take: too deep, a too-long number.
NASTY = {
    "nested": b"[" * 1500 + b"]" * 1500,
    "huge-number": b'{"order_id": ' + b"1" * 5000 + b"}",
}


async def test_malformed_messages_go_straight_to_the_dead_letter_queue(
    make_system: SystemFactory,
) -> None:
    """Each kind of malformed message, published with a raw client, lands in the inventory
    dead-letter queue on its first attempt with its reason; good orders still complete."""
    system = await make_system(max_body_bytes=16_384)
    await system.inventory.inventory.set_stock("apple", 5)
    topology = system.settings.topology()
    connection = await aio_pika.connect(system.settings.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(topology.commands_exchange)
        for reason, fields in MALFORMED.items():
            await exchange.publish(
                aio_pika.Message(
                    fields["body"],
                    type=fields["type"],
                    correlation_id=fields["correlation_id"],
                    message_id=f"malformed-{reason}",
                ),
                routing_key="inventory.reserve_stock",
                mandatory=True,
            )
        for name, body in NASTY.items():
            message = aio_pika.Message(
                body, type=ReserveStock.TYPE, correlation_id="s1", message_id=f"malformed-{name}"
            )
            await exchange.publish(message, routing_key="inventory.reserve_stock", mandatory=True)

    dlq = topology.queue("inventory.commands").dlq
    await eventually(
        lambda: depth(system.settings.amqp_url, dlq),
        until=lambda n: n >= len(MALFORMED) + len(NASTY),
        what="all malformed dead-lettered",
    )
    saga_id = await system.order(("apple", 1))
    assert (await system.settle(saga_id)).status is Status.COMPLETED

    dead = await take_all(system.settings.amqp_url, dlq)
    reasons = {m.message_id: m.headers["x-error-reason"] for m in dead}
    assert reasons == {f"malformed-{r}": r for r in MALFORMED} | {
        f"malformed-{name}": "undecodable" for name in NASTY
    }
    assert all(m.headers["x-attempt"] == 1 for m in dead)
    assert all(m.headers["x-error-message"] for m in dead)
    await system.invariants({"apple": 5}, [saga_id])
