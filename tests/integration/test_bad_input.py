"""Bad input the orchestrator used to accept or crash on goes to the dead-letter queue."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from contracts import MalformedMessage, OrderLine, PlaceOrder
from orchestrator.saga.commits import Commit
from orchestrator.saga.state import EventType, SagaEvent, Status
from tests.integration.conftest import System, SystemFactory
from tests.integration.test_dlq_ops import dlq_depth_is
from tests.rabbit import take_all

pytestmark = pytest.mark.integration


def place(order_id: str, quantity: int = 1) -> PlaceOrder:
    return PlaceOrder(
        order_id=order_id,
        customer_id="c-1",
        lines=(OrderLine(sku="apple", quantity=quantity),),
        amount_cents=100,
    )


async def test_a_different_start_for_an_existing_saga_is_dead_lettered(system: System) -> None:
    """The same start again (another message id) is harmless; a different start for the
    same saga id, under a new message id or under the first one's, is dead-lettered as
    ``conflicting_start`` and changes nothing."""
    await system.inventory.inventory.set_stock("apple", 5)
    saga_id = await system.client.start(place("o-1"), saga_id="saga-conflict")
    assert (await system.settle(saga_id)).status is Status.COMPLETED
    version = (await system.client.state(saga_id)).version

    await system.client.start(place("o-1"), saga_id=saga_id, message_id="again")
    await system.client.start(place("o-2", 3), saga_id=saga_id, message_id="other")
    await system.client.start(place("o-3", 2), saga_id=saga_id)  # the first one's id
    dlq = system.settings.topology().queue("orchestrator.order_fulfilment.starts").dlq
    await dlq_depth_is(system, dlq, 2)

    dead = await take_all(system.settings.amqp_url, dlq)
    assert {str(m.message_id) for m in dead} == {f"{saga_id}:start", "other"}
    assert {m.headers["x-error-reason"] for m in dead} == {"conflicting_start"}
    state = await system.client.state(saga_id)
    assert (state.version, state.data["order_id"]) == (version, "o-1")
    assert (await system.levels("apple")).shipped == 1


async def test_a_value_bson_cannot_hold_is_malformed_not_transient(system: System) -> None:
    """An integer beyond int64 in a commit (a start contract without bounds would let
    one through) is refused as malformed input, so it is dead-lettered at once instead
    of being retried as a store failure."""
    started = SagaEvent(
        type=EventType.SAGA_STARTED,
        at=datetime.now(UTC),
        data={"saga_name": "order_fulfilment", "start": {"amount_cents": 10**30}},
    )
    commit = Commit(
        saga_id="too-big",
        version=1,
        causation_id="m-1",
        events=(started,),
        created_at=datetime.now(UTC),
        status="running",
    )
    with pytest.raises(MalformedMessage) as caught:
        await system.orchestrator.store.append(commit)
    assert caught.value.reason == "schema_violation"
    assert "cannot be stored" in caught.value.detail
    assert await system.client.history("too-big") == []


async def test_a_start_no_instance_serves_is_dead_lettered_after_its_deferrals(
    make_system: SystemFactory,
) -> None:
    """A start naming a version newer than any orchestrator serves goes round the first
    retry tier uncounted (a newer instance of a rolling deploy may take it), but not
    forever: after ``SAGA_MAX_DEFERRALS`` rounds it is dead-lettered as ``not_served``."""
    system = await make_system(retry_delays=(0.1,), max_deferrals=3)
    saga_id = await system.client.start(place("o-99"), saga_id="saga-v99", version=99)
    dlq = system.settings.topology().queue("orchestrator.order_fulfilment.starts").dlq
    await dlq_depth_is(system, dlq, 1)

    (dead,) = await take_all(system.settings.amqp_url, dlq)
    assert dead.headers["x-error-reason"] == "not_served"
    assert dead.headers["x-deferrals"] == 3
    assert str(dead.correlation_id) == saga_id
    assert not (await system.client.state(saga_id)).started
