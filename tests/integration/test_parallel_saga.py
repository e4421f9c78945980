"""The parallel order saga over the real broker and store: stock and payment at once."""

from __future__ import annotations

import asyncio

import pytest

from contracts import AuthorizePayment, OrderLine, ReserveStock
from orchestrator.client import new_saga_id
from orchestrator.packs.order_fulfilment import PlaceOrderInParallel
from orchestrator.ports import OutboxPublisher
from orchestrator.saga.commits import Commit, OutboxEntry
from orchestrator.saga.state import EventType, Status
from tests.faults import HeldUntil
from tests.helpers import eventually
from tests.integration.conftest import System

pytestmark = pytest.mark.integration

E = EventType
GROUP = ("inventory.reserve_stock", "payment.authorize_payment")


async def order_in_parallel(
    system: System, *lines: tuple[str, int], amount_cents: int = 1_000
) -> str:
    """Start an order_fulfilment_parallel saga; returns its saga id."""
    saga_id = new_saga_id()
    command = PlaceOrderInParallel(
        order_id=f"order-{saga_id[:8]}",
        customer_id="customer-1",
        lines=tuple(OrderLine(sku=s, quantity=q) for s, q in lines),
        amount_cents=amount_cents,
        ship_to="1 Main Street, Springfield",
    )
    return await system.client.start(command, saga_id=saga_id)


async def events_of(system: System, saga_id: str) -> list[tuple[EventType, str | None]]:
    """(type, step) of every stored event of the saga."""
    return [(e.type, e.step) for c in await system.client.history(saga_id) for e in c.events]


async def until_event(system: System, saga_id: str, wanted: tuple[EventType, str]) -> None:
    """Wait until the saga stored ``wanted``."""
    await eventually(
        lambda: events_of(system, saga_id), until=lambda kinds: wanted in kinds, what=str(wanted)
    )


async def test_both_steps_of_the_group_succeed_and_the_shipment_follows(system: System) -> None:
    """One commit sends ReserveStock and AuthorizePayment together; the shipment is
    scheduled once both succeeded; the order completes and settles."""
    await system.inventory.inventory.set_stock("apple", 10)

    saga_id = await order_in_parallel(system, ("apple", 3))
    state = await system.settle(saga_id)

    assert state.status is Status.COMPLETED
    assert state.saga_name == "order_fulfilment_parallel"
    assert set(state.done) == {"reserve_stock", "authorize_payment", "schedule_shipment"}
    history = await system.client.history(saga_id)
    first = history[0]
    assert [o.routing_key for o in first.outbox if o.kind == "command"] == list(GROUP)
    shipment_commit = next(
        c for c in history if any(o.routing_key == "shipping.schedule_shipment" for o in c.outbox)
    )
    assert {
        e.step
        for c in history[: history.index(shipment_commit) + 1]
        for e in c.events
        if e.type is E.STEP_SUCCEEDED
    } == {"reserve_stock", "authorize_payment"}
    await system.invariants({"apple": 10}, [saga_id])
    apple = await system.levels("apple")
    assert (apple.available, apple.reserved, apple.shipped) == (7, 0, 3)
    payment = await system.payment_of(saga_id)
    assert payment is not None
    assert payment["status"] == "captured"


async def test_payment_refused_while_the_stock_was_reserved_releases_the_stock(
    system: System,
) -> None:
    """The stock is reserved first; then the payment is declined: the reservation is
    released and nothing is shipped."""
    await system.inventory.inventory.set_stock("apple", 10)
    limit = system.payment.payments.decline_above_cents
    saga_ids: list[str] = []

    async def after_the_reservation(_saga_id: str) -> None:
        await until_event(system, saga_ids[0], (E.STEP_SUCCEEDED, "reserve_stock"))

    system.payment.on_command(
        AuthorizePayment, HeldUntil(system.payment.authorize, after_the_reservation)
    )

    saga_ids.append(await order_in_parallel(system, ("apple", 4), amount_cents=limit + 1))
    state = await system.settle(saga_ids[0])

    assert state.status is Status.COMPENSATED
    assert state.failed_step == "authorize_payment"
    kinds = await events_of(system, saga_ids[0])
    assert kinds.index((E.STEP_SUCCEEDED, "reserve_stock")) < kinds.index(
        (E.STEP_FAILED, "authorize_payment")
    )
    assert (E.STEP_COMPENSATED, "reserve_stock") in kinds
    assert not any(step == "schedule_shipment" for _, step in kinds)
    await system.invariants({"apple": 10}, saga_ids)
    apple = await system.levels("apple")
    assert (apple.available, apple.reserved, apple.shipped) == (10, 0, 0)
    assert await system.shipment_of(saga_ids[0]) is None


async def test_a_slow_reservation_succeeding_after_the_payment_was_declined_is_released(
    system: System,
) -> None:
    """The payment is declined while the reservation is still on its way; when the
    reservation succeeds late, it is compensated: the stock is released."""
    await system.inventory.inventory.set_stock("apple", 10)
    limit = system.payment.payments.decline_above_cents
    saga_ids: list[str] = []

    async def after_the_decline(_saga_id: str) -> None:
        await until_event(system, saga_ids[0], (E.STEP_FAILED, "authorize_payment"))

    slow = HeldUntil(system.inventory.reserve, after_the_decline)
    system.inventory.on_command(ReserveStock, slow)

    saga_ids.append(await order_in_parallel(system, ("apple", 4), amount_cents=limit + 1))
    state = await system.settle(saga_ids[0])

    assert state.status is Status.COMPENSATED
    assert (state.failed_step, state.undone) == ("authorize_payment", ("reserve_stock",))
    history = await system.client.history(saga_ids[0])
    late = [
        e
        for c in history
        for e in c.events
        if (e.type, e.step) == (E.STEP_SUCCEEDED, "reserve_stock")
    ]
    assert len(late) == 1
    assert late[0].data.get("late") is True
    assert slow.held == 1
    await system.invariants({"apple": 10}, saga_ids)
    apple = await system.levels("apple")
    assert (apple.available, apple.reserved, apple.shipped) == (10, 0, 0)


class CrashBeforePublishingTheGroup:
    """An outbox publisher that 'dies' before sending anything of the commit that holds
    the group's commands."""

    def __init__(self, inner: OutboxPublisher) -> None:
        self.inner = inner
        self.crashed = asyncio.Event()

    async def publish(self, *, commit: Commit, entry: OutboxEntry) -> None:
        if {o.routing_key for o in commit.outbox} >= set(GROUP):
            self.crashed.set()
            await asyncio.Event().wait()  # the process is gone; nothing after this runs
        await self.inner.publish(commit=commit, entry=entry)


async def test_crash_between_storing_the_group_and_publishing_it(system: System) -> None:
    """The group is stored in one commit and the orchestrator dies before publishing it:
    after a restart the relay publishes both commands and the saga completes."""
    await system.inventory.inventory.set_stock("apple", 5)
    dispatcher = system.orchestrator.runtime.dispatcher
    crasher = CrashBeforePublishingTheGroup(dispatcher.publisher)
    dispatcher.publisher = crasher

    saga_id = await order_in_parallel(system, ("apple", 1))
    await asyncio.wait_for(crasher.crashed.wait(), timeout=30)
    stored = await system.client.history(saga_id)
    assert len(stored) == 1
    assert [o.routing_key for o in stored[0].outbox if o.kind == "command"] == list(GROUP)
    assert await system.payment_of(saga_id) is None, "nothing was published"
    assert (await system.levels("apple")).available == 5

    restarted = await system.restart_orchestrator(crash=True)
    state = await system.settle(saga_id)

    assert state.status is Status.COMPLETED
    assert restarted.relay.relayed >= 1
    await system.invariants({"apple": 5}, [saga_id])
    apple = await system.levels("apple")
    assert (apple.available, apple.shipped) == (4, 1)
