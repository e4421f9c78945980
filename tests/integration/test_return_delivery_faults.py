"""The order-return saga under duplicated deliveries and a crash between store and
publish: each effect once, nothing dropped."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.saga.state import Status
from tests.integration.conftest import System
from tests.integration.test_delivery_faults import CrashBeforePublishing, publish_everything_twice
from tests.integration.test_return_saga import goodwill_refund

pytestmark = pytest.mark.integration


async def test_every_return_command_and_reply_delivered_twice_has_effect_once(
    system: System,
) -> None:
    """Every message of every service published twice: a completed return takes its
    goods back and refunds once; a compensated one (on v1) undoes each effect once;
    histories hold no event twice."""
    await system.inventory.inventory.set_stock("apple", 10)
    kept = await system.completed_order(("apple", 3), amount_cents=3_000)
    refused = await system.completed_order(("apple", 2), amount_cents=2_000)
    await goodwill_refund(system, refused, captured=2_000, refunded=1_000)
    services = (system.orchestrator, system.inventory, system.payment, system.returns)
    for service in services:
        publish_everything_twice(service.bus)

    completed = await system.return_order(kept, ("apple", 2), refund_cents=2_000)
    # v1: a refused refund is compensated (v2 parks it, test_return_refund_retriable)
    compensated = await system.return_order(refused, ("apple", 2), refund_cents=2_000, version=1)
    assert (await system.settle(completed)).status is Status.COMPLETED
    assert (await system.settle(compensated)).status is Status.COMPENSATED

    apple = await system.levels("apple")
    assert (apple.available, apple.reserved, apple.shipped) == (7, 0, 3)
    ledger = await system.payment.refunds.ledger(kept)
    assert ledger is not None
    assert (ledger["refunds"], ledger["refundable_cents"]) == ({completed: 2_000}, 1_000)
    other = await system.payment.refunds.ledger(refused)
    assert other is not None
    assert (other["refunds"], other["refundable_cents"]) == ({"goodwill": 1_000}, 1_000)
    for saga_id in (completed, compensated):
        history = await system.client.history(saga_id)
        events = [(e.type, e.step) for c in history for e in c.events]
        assert len(events) == len(set(events)), f"duplicate events in {events}"
    assert system.orchestrator.runtime.stats.duplicates > 0, "no duplicate reached the saga"
    await system.invariants({"apple": 10}, [kept, refused, completed, compensated])


async def test_crash_before_the_refund_is_published_delays_it_never_drops_it(
    system: System,
) -> None:
    """The orchestrator stores the refund step and dies before publishing its command;
    after a restart the relay publishes it, and the return completes with one refund."""
    await system.inventory.inventory.set_stock("apple", 5)
    order = await system.completed_order(("apple", 2), amount_cents=2_000)
    dispatcher = system.orchestrator.runtime.dispatcher
    crasher = CrashBeforePublishing(dispatcher.publisher, "payment.refund_payment")
    dispatcher.publisher = crasher

    saga_id = await system.return_order(order, ("apple", 2), refund_cents=2_000)
    await asyncio.wait_for(crasher.crashed.wait(), timeout=30)
    stored = await system.client.history(saga_id)
    pending = [
        c for c in stored if any(o.routing_key == "payment.refund_payment" for o in c.outbox)
    ]
    assert len(pending) == 1, "the step was stored before the crash"
    assert await system.payment.refunds.ledger(order) is None, "nothing was published"

    restarted = await system.restart_orchestrator(crash=True)
    state = await system.settle(saga_id)

    assert state.status is Status.COMPLETED
    assert restarted.relay.relayed >= 1
    ledger = await system.payment.refunds.ledger(order)
    assert ledger is not None
    assert ledger["refunds"] == {saga_id: 2_000}
    apple = await system.levels("apple")
    assert (apple.available, apple.shipped) == (5, 0)
    await system.invariants({"apple": 5}, [order, saga_id])
