"""Bad input to the return saga goes to the dead-letter queue at once, with its reason:
an amount no MongoDB document can hold is a schema violation, not a store failure that
is retried until the retries run out."""

from __future__ import annotations

import json

import aio_pika
import pytest

from contracts import RequestReturn
from orchestrator.saga.definition import routing_key
from tests.helpers import eventually
from tests.integration.conftest import SystemFactory
from tests.rabbit import take_all

pytestmark = pytest.mark.integration


async def test_a_refund_beyond_64_bits_is_dead_lettered_at_once_as_a_schema_violation(
    make_system: SystemFactory,
) -> None:
    """Scenario: a caller publishes RequestReturn with refund_cents = 2**63 (one more than
    a BSON int64). On main it passes validation, the orchestrator's append fails with
    OverflowError on every attempt and the start is dead-lettered as
    ``retries_exhausted`` after three deliveries; no saga exists either way."""
    system = await make_system(retry_delays=(0.1, 0.2))
    body = {
        "return_id": "return-1",
        "order_saga_id": "order-saga-1",
        "lines": [{"sku": "apple", "quantity": 1}],
        "refund_cents": 2**63,
    }
    message = aio_pika.Message(
        json.dumps(body).encode(),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id="huge-refund:start",
        correlation_id="huge-refund",
        type=RequestReturn.TYPE,
    )
    topology = system.settings.topology()
    await system.client.bus.publish(
        message, exchange=topology.commands_exchange, routing_key=routing_key(RequestReturn)
    )
    starts, _ = topology.saga_queues("order_return")

    dead = await eventually(
        lambda: take_all(system.settings.amqp_url, starts.dlq), until=bool, what="dead letter"
    )

    assert [m.message_id for m in dead] == ["huge-refund:start"]
    assert dead[0].headers["x-error-reason"] == "schema_violation"
    assert dead[0].headers["x-attempt"] == 1
    assert "refund_cents" in str(dead[0].headers["x-error-message"])
    assert (await system.client.state("huge-refund")).version == 0
