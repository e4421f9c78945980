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
    assert payment is not None
    assert payment["amount_cents"] == 4_200
    assert payment["status"] in ("authorized", "captured")
    shipment = await system.shipment_of(saga_id)
    assert shipment is not None
    assert shipment["status"] == "scheduled"
    apple, pear = await system.levels("apple"), await system.levels("pear")
    assert apple.available == 7
    assert apple.total == 10
    assert pear.available == 3
    assert pear.total == 5
    history = await system.client.history(saga_id)
    kinds = [e.type for c in history for e in c.events]
    assert kinds == [
        EventType.SAGA_STARTED,
        EventType.STEP_STARTED,
        EventType.STEP_SUCCEEDED,
        EventType.STEP_STARTED,
        EventType.STEP_SUCCEEDED,
        EventType.STEP_STARTED,
        EventType.STEP_SUCCEEDED,
        EventType.SAGA_COMPLETED,
    ]
    assert [c.version for c in history] == [1, 2, 3, 4]


async def test_insufficient_stock_fails_without_payment_and_leaves_stock(system: System) -> None:
    """All or nothing: one short line refuses the order, nothing is held, no payment."""
    await system.inventory.inventory.set_stock("apple", 10)
    await system.inventory.inventory.set_stock("pear", 1)

    saga_id = await system.order(("apple", 3), ("pear", 2))
    state = await system.settle(saga_id)

    assert state.status is Status.FAILED
    assert state.failed_step == "reserve_stock"
    assert "pear" in (state.reason or "")
    assert await system.payment_of(saga_id) is None
    assert await system.shipment_of(saga_id) is None
    apple, pear = await system.levels("apple"), await system.levels("pear")
    assert (apple.available, apple.reserved, apple.shipped) == (10, 0, 0)
    assert (pear.available, pear.reserved, pear.shipped) == (1, 0, 0)


async def test_payment_declined_releases_stock(system: System) -> None:
    """A declined payment compensates the reservation: available stock is back to start."""
    await system.inventory.inventory.set_stock("apple", 10)
    limit = system.settings.payment_decline_above_cents

    saga_id = await system.order(("apple", 4), amount_cents=limit + 1)
    state = await system.settle(saga_id)

    assert state.status is Status.COMPENSATED
    assert state.failed_step == "authorize_payment"
    apple = await system.levels("apple")
    assert (apple.available, apple.reserved, apple.shipped) == (10, 0, 0)
    payment = await system.payment_of(saga_id)
    assert payment is not None
    assert payment["status"] == "declined"
    assert await system.shipment_of(saga_id) is None


async def test_shipping_failure_voids_payment_then_releases_stock(system: System) -> None:
    """Compensation runs in reverse order: VoidPayment, then ReleaseStock."""
    await system.inventory.inventory.set_stock("apple", 10)

    saga_id = await system.order(("apple", 2), ship_to="7 Sunken Road, Atlantis")
    state = await system.settle(saga_id)

    assert state.status is Status.COMPENSATED
    assert state.failed_step == "schedule_shipment"
    history = await system.client.history(saga_id)
    compensations = [
        (e.type, e.step)
        for c in history
        for e in c.events
        if e.type in (EventType.COMPENSATION_STARTED, EventType.STEP_COMPENSATED)
    ]
    assert compensations == [
        (EventType.COMPENSATION_STARTED, "authorize_payment"),
        (EventType.STEP_COMPENSATED, "authorize_payment"),
        (EventType.COMPENSATION_STARTED, "reserve_stock"),
        (EventType.STEP_COMPENSATED, "reserve_stock"),
    ]
    commands = [o.routing_key for c in history for o in c.outbox if o.kind == "command"]
    assert commands[-2:] == ["payment.void_payment", "inventory.release_stock"]
    payment = await system.payment_of(saga_id)
    assert payment is not None
    assert payment["status"] == "voided"
    apple = await system.levels("apple")
    assert (apple.available, apple.reserved, apple.shipped) == (10, 0, 0)
