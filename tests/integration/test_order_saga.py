"""The order saga end to end over the real broker and a MongoDB-protocol store."""

from __future__ import annotations

import pytest

from orchestrator.state import EventType, Status
from tests.integration.conftest import System

pytestmark = pytest.mark.integration


async def test_happy_path_reserves_authorizes_ships_then_settles(system: System) -> None:
    """The order completes: stock is reduced by the order, the payment is authorized (then
    captured on completion) and a shipment is scheduled."""
    await system.inventory.inventory.set_stock("apple", 10)
    await system.inventory.inventory.set_stock("pear", 5)

    saga_id = await system.order(("apple", 3), ("pear", 2), amount_cents=4_200)
    state = await system.settle(saga_id)

    assert state.status is Status.COMPLETED
    assert state.done == ("reserve_stock", "authorize_payment", "schedule_shipment")
    payment = await system.payment_of(saga_id)
    assert payment is not None and payment["amount_cents"] == 4_200
    assert payment["status"] in ("authorized", "captured")
    shipment = await system.shipment_of(saga_id)
    assert shipment is not None and shipment["status"] == "scheduled"
    apple, pear = await system.levels("apple"), await system.levels("pear")
    assert apple.available == 7 and apple.total == 10
    assert pear.available == 3 and pear.total == 5
    history = await system.client.history(saga_id)
    kinds = [e.type for c in history for e in c.events]
    assert kinds == [
        EventType.SAGA_STARTED, EventType.STEP_STARTED, EventType.STEP_SUCCEEDED,
        EventType.STEP_STARTED, EventType.STEP_SUCCEEDED, EventType.STEP_STARTED,
        EventType.STEP_SUCCEEDED, EventType.SAGA_COMPLETED,
    ]
    assert [c.version for c in history] == [1, 2, 3, 4]
