"""The order saga end to end over the real broker and a MongoDB-protocol store."""

from __future__ import annotations

import pytest

from orchestrator.client import new_saga_id
from orchestrator.dev.harness import FaultsClient
from orchestrator.saga.state import EventType, Status
from participants.kit.faults import FaultRule
from tests.integration.conftest import System, SystemFactory

pytestmark = pytest.mark.integration


async def test_happy_path_reserves_authorizes_ships_then_settles(system: System) -> None:
    """The order completes (v2) only once all five steps are done: stock is reduced by
    the order and shipped, the payment is captured and a shipment is scheduled."""
    await system.inventory.inventory.set_stock("apple", 10)
    await system.inventory.inventory.set_stock("pear", 5)

    saga_id = await system.order(("apple", 3), ("pear", 2), amount_cents=4_200)
    state = await system.settle(saga_id)

    assert (state.status, state.saga_version) == (Status.COMPLETED, 2)
    assert state.done == (
        "reserve_stock",
        "authorize_payment",
        "schedule_shipment",
        "capture_payment",
        "ship_stock",
    )
    payment = await system.payment_of(saga_id)
    assert payment is not None
    assert payment["amount_cents"] == 4_200
    assert payment["status"] == "captured", "completed means captured"
    reservation = await system.inventory.inventory.reservations.find_one({"_id": saga_id})
    assert reservation is not None
    assert reservation["status"] == "shipped", "completed means shipped"
    shipment = await system.shipment_of(saga_id)
    assert shipment is not None
    assert shipment["status"] == "scheduled"
    apple, pear = await system.levels("apple"), await system.levels("pear")
    assert (apple.available, apple.reserved, apple.shipped) == (7, 0, 3)
    assert apple.total == 10
    assert (pear.available, pear.reserved, pear.shipped) == (3, 0, 2)
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
        EventType.STEP_STARTED,
        EventType.STEP_SUCCEEDED,
        EventType.STEP_STARTED,
        EventType.STEP_SUCCEEDED,
        EventType.SAGA_COMPLETED,
    ]
    assert [c.version for c in history] == [1, 2, 3, 4, 5, 6]


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
    limit = system.payment.payments.decline_above_cents

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


async def test_a_reserve_that_held_stock_and_never_came_back_is_undone_by_the_release(
    make_system: SystemFactory,
) -> None:
    """An attempt held ``apple`` for the saga, then its process died; that delivery was
    dead-lettered and discarded. Every later copy of ReserveStock fails before its
    handler runs (an injected error, as a store outage would), so no reservation is ever
    decided: the saga gives up on the step and releases. The release carries the
    order's lines and gives ``apple`` back; nothing stays held."""
    system = await make_system(
        faults_enabled=True, step_timeout=0.5, step_max_sends=2, deadline_poll=0.1
    )
    inventory = system.inventory.inventory
    await inventory.set_stock("apple", 5)
    saga_id = new_saga_id()
    assert await inventory._hold(saga_id, "apple", 2, "dead-attempt") == "dead-attempt"
    rule = FaultRule(
        participant="inventory", command="reserve_stock", saga_id=saga_id, action="raise"
    )
    faults = FaultsClient(bus=system.client.bus, database=system.inventory.db)
    await faults.install(rule, listeners=4)

    await system.order(("apple", 2), saga_id=saga_id)

    state = await system.settle(saga_id)
    assert (state.status, state.failed_step) == (Status.COMPENSATED, "reserve_stock")
    apple = await system.levels("apple")
    assert (apple.available, apple.reserved, apple.shipped) == (5, 0, 0)
    await system.invariants({"apple": 5}, [saga_id])
