"""The order-return saga end to end over the real broker and a MongoDB-protocol store:
a second saga on the same engine, beside the order saga whose orders it returns."""

from __future__ import annotations

import pytest

from orchestrator.packs.order_return.seed import seed
from orchestrator.saga.state import EventType, Status
from tests.helpers import eventually
from tests.integration.conftest import System, SystemFactory

pytestmark = pytest.mark.integration

STOCK = {"apple": 10}


async def sent_commands(system: System, saga_id: str) -> list[str]:
    """The routing keys of the commands the saga sent, in order, each once."""
    history = await system.client.history(saga_id)
    keys = [o.routing_key for c in history for o in c.outbox if o.kind == "command"]
    return list(dict.fromkeys(keys))


async def test_happy_path_accepts_takes_back_and_refunds(system: System) -> None:
    """The return completes: 2 of 3 shipped units are available again, 20.00 of the
    30.00 captured is refunded, and the order counts as returned."""
    await system.inventory.inventory.set_stock("apple", 10)
    order = await system.completed_order(("apple", 3), amount_cents=3_000)

    saga_id = await system.return_order(order, ("apple", 2), refund_cents=2_000)
    state = await system.settle(saga_id)

    assert state.status is Status.COMPLETED, state.reason
    assert (state.saga_name, state.saga_version) == ("order_return", 2)
    assert state.done == ("accept_return", "take_back_stock", "refund_payment")
    assert state.reference == f"return-{saga_id[:8]}"
    apple = await system.levels("apple")
    assert (apple.available, apple.reserved, apple.shipped) == (9, 0, 1)
    ledger = await system.payment.refunds.ledger(order)
    assert ledger is not None
    assert ledger["refunds"] == {saga_id: 2_000}
    assert (ledger["captured_cents"], ledger["refundable_cents"]) == (3_000, 1_000)
    # the completed return settles its take-back: final, and out of the SKU documents
    returns = system.inventory.returns
    settled = await eventually(
        lambda: returns.outcome(saga_id),
        until=lambda doc: doc is not None and doc["status"] == "settled",
        what="the take-back settled",
    )
    assert settled is not None
    # the status is set first, then the marks leave the SKU documents one by one
    await eventually(
        lambda: returns.taken_back(saga_id),
        until=lambda marks: marks == {},
        what="the take-back's marks removed",
    )
    claim = await system.returns.returns.claim_of(order)
    assert claim == {"_id": order, "return_saga_id": saga_id, "status": "accepted"}
    assert await sent_commands(system, saga_id) == [
        "returns.accept_return",
        "inventory.take_back_stock",
        "payment.refund_payment",
    ]
    report = await system.invariants(STOCK, [order, saga_id])
    assert report.outcomes == {"completed": 2}


async def test_return_of_an_order_that_did_not_complete_is_refused(system: System) -> None:
    """Only completed orders are returnable: a failed order, an unknown saga and a
    return saga itself are refused at the first step, and nothing is moved."""
    await system.inventory.inventory.set_stock("apple", 1)
    failed = await system.order(("apple", 5))
    assert (await system.settle(failed)).status is Status.FAILED
    kept = await system.completed_order(("apple", 1))
    first = await system.return_order(kept, ("apple", 1), refund_cents=100)
    assert (await system.settle(first)).status is Status.COMPLETED

    refused = {
        "failed, not completed": await system.return_order(failed, ("apple", 1), refund_cents=1),
        "no saga": await system.return_order("no-such-saga", ("apple", 1), refund_cents=1),
        "not an order": await system.return_order(first, ("apple", 1), refund_cents=1),
    }

    for words, saga_id in refused.items():
        state = await system.settle(saga_id)
        assert state.status is Status.FAILED
        assert state.failed_step == "accept_return"
        assert words in (state.reason or ""), state.reason
        assert await system.inventory.returns.taken_back(saga_id) == {}
        assert await sent_commands(system, saga_id) == ["returns.accept_return"]
    apple = await system.levels("apple")
    assert (apple.available, apple.reserved, apple.shipped) == (1, 0, 0)
    await system.invariants({"apple": 1}, [failed, kept, first, *refused.values()])


async def test_a_second_return_of_the_same_order_is_refused(system: System) -> None:
    """One return per order: the second, even of other units, is refused."""
    await system.inventory.inventory.set_stock("apple", 10)
    order = await system.completed_order(("apple", 3), amount_cents=3_000)
    first = await system.return_order(order, ("apple", 1), refund_cents=1_000)
    assert (await system.settle(first)).status is Status.COMPLETED

    second = await system.return_order(order, ("apple", 2), refund_cents=1_000)
    state = await system.settle(second)

    assert state.status is Status.FAILED
    assert "already returned" in (state.reason or "")
    apple = await system.levels("apple")
    assert (apple.available, apple.shipped) == (8, 2)
    ledger = await system.payment.refunds.ledger(order)
    assert ledger is not None
    assert ledger["refunds"] == {first: 1_000}
    await system.invariants(STOCK, [order, first, second])


async def test_lines_not_on_the_order_are_refused(system: System) -> None:
    """More units than were ordered, or a SKU that was not on the order: refused."""
    await system.inventory.inventory.set_stock("apple", 10)
    await system.inventory.inventory.set_stock("pear", 10)
    order = await system.completed_order(("apple", 2))

    too_many = await system.return_order(order, ("apple", 3), refund_cents=1)
    other_sku = await system.return_order(order, ("pear", 1), refund_cents=1)

    for saga_id in (too_many, other_sku):
        state = await system.settle(saga_id)
        assert state.status is Status.FAILED
        assert "on the order" in (state.reason or "")
    await system.invariants({"apple": 10, "pear": 10}, [order, too_many, other_sku])


async def test_a_return_outside_the_window_is_refused(make_system: SystemFactory) -> None:
    """RETURNS_WINDOW_DAYS=0 closes the window as soon as the order completes."""
    system = await make_system(extra={"RETURNS_WINDOW_DAYS": "0"})
    await system.inventory.inventory.set_stock("apple", 10)
    order = await system.completed_order(("apple", 2))

    saga_id = await system.return_order(order, ("apple", 1), refund_cents=100)
    state = await system.settle(saga_id)

    assert state.status is Status.FAILED
    assert "return window closed" in (state.reason or "")
    assert await system.returns.returns.claim_of(order) is None
    await system.invariants(STOCK, [order, saga_id])


async def test_take_back_refused_cancels_the_acceptance(system: System) -> None:
    """Inventory refuses units that are no longer counted as shipped (written off after
    the order): the acceptance is cancelled, so the order may be returned later."""
    await system.inventory.inventory.set_stock("apple", 10)
    order = await system.completed_order(("apple", 3), amount_cents=3_000)
    await system.inventory.inventory.stock.update_one(
        {"_id": "apple"}, {"$inc": {"shipped": -3, "available": 3}}
    )

    saga_id = await system.return_order(order, ("apple", 2), refund_cents=2_000)
    state = await system.settle(saga_id)

    assert state.status is Status.COMPENSATED
    assert state.failed_step == "take_back_stock"
    assert "not shipped" in (state.reason or "")
    assert await sent_commands(system, saga_id) == [
        "returns.accept_return",
        "inventory.take_back_stock",
        "returns.cancel_return",
    ]
    decision = await system.returns.returns.decision(saga_id)
    assert decision is not None
    assert decision["status"] == "cancelled"
    claim = await system.returns.returns.claim_of(order)
    assert claim is not None
    assert claim["status"] == "cancelled"
    assert await system.payment.refunds.ledger(order) is None
    apple = await system.levels("apple")
    assert (apple.available, apple.reserved, apple.shipped) == (10, 0, 0)


async def goodwill_refund(system: System, order: str, *, captured: int, refunded: int) -> None:
    """A refund recorded against the order before its return (a goodwill gesture by
    customer service): less is refundable than the order's amount, which payment knows
    and the returns service does not."""
    await system.payment.refunds.ledgers.insert_one(
        {
            "_id": order,
            "refunds": {"goodwill": refunded},
            "refused": {},
            "cancelled": {},
            "reversed": {},
            "captured_cents": captured,
            "refundable_cents": captured - refunded,
            "currency": "EUR",
        }
    )


async def test_v1_refund_refused_undoes_the_take_back_then_the_acceptance(system: System) -> None:
    """On v1 (kept for returns in flight on it), asking more than is still refundable
    (an earlier goodwill refund): payment refuses, then the goods leave stock again and
    the acceptance is cancelled, in that order; a corrected return then completes.
    (v2 parks such a return instead: test_return_refund_retriable.)"""
    await system.inventory.inventory.set_stock("apple", 10)
    order = await system.completed_order(("apple", 3), amount_cents=3_000)
    await goodwill_refund(system, order, captured=3_000, refunded=2_000)

    greedy = await system.return_order(order, ("apple", 2), refund_cents=1_500, version=1)
    state = await system.settle(greedy)

    assert state.status is Status.COMPENSATED
    assert state.failed_step == "refund_payment"
    assert "1500 cents asked, 1000" in (state.reason or "")
    assert await sent_commands(system, greedy) == [
        "returns.accept_return",
        "inventory.take_back_stock",
        "payment.refund_payment",
        "inventory.undo_take_back",
        "returns.cancel_return",
    ]
    history = await system.client.history(greedy)
    undone = [e.step for c in history for e in c.events if e.type is EventType.STEP_COMPENSATED]
    assert undone == ["take_back_stock", "accept_return"]
    apple = await system.levels("apple")
    assert (apple.available, apple.reserved, apple.shipped) == (7, 0, 3)
    assert await system.inventory.returns.taken_back(greedy) == {}

    fair = await system.return_order(order, ("apple", 2), refund_cents=1_000)
    assert (await system.settle(fair)).status is Status.COMPLETED
    ledger = await system.payment.refunds.ledger(order)
    assert ledger is not None
    assert ledger["refunds"] == {"goodwill": 2_000, fair: 1_000}
    assert ledger["refundable_cents"] == 0
    await system.invariants(STOCK, [order, greedy, fair])


async def test_a_refund_above_the_orders_amount_is_refused_at_acceptance(system: System) -> None:
    """Asking more than the order's amount is refused by the returns service, before
    the goods go back on sale: nothing moves, nothing is compensated."""
    await system.inventory.inventory.set_stock("apple", 10)
    order = await system.completed_order(("apple", 3), amount_cents=3_000)

    greedy = await system.return_order(order, ("apple", 2), refund_cents=3_001)
    state = await system.settle(greedy)

    assert state.status is Status.FAILED
    assert state.failed_step == "accept_return"
    assert "3001 cents was asked, the order was 3000" in (state.reason or "")
    assert await sent_commands(system, greedy) == ["returns.accept_return"]
    apple = await system.levels("apple")
    assert (apple.available, apple.reserved, apple.shipped) == (7, 0, 3)
    assert await system.returns.returns.claim_of(order) is None
    await system.invariants(STOCK, [order, greedy])


async def test_v1_a_refund_whose_reply_is_lost_is_reversed(make_system: SystemFactory) -> None:
    """On v1, the refund happened but its reply never came: the step times out, and the
    saga undoes it too (CancelRefund reverses it) before the take-back and the
    acceptance; the compensated return has neither its goods back nor its refund."""
    system = await make_system(step_timeout=1.0, step_max_sends=2, deadline_poll=0.1)
    original = system.payment.send_reply

    async def drop_refund_replies(envelope, reply, **kwargs):  # type: ignore[no-untyped-def]
        if reply.TYPE != "payment.payment_refunded.v1":
            await original(envelope, reply, **kwargs)

    system.payment.send_reply = drop_refund_replies  # type: ignore[method-assign]
    await system.inventory.inventory.set_stock("apple", 10)
    order = await system.completed_order(("apple", 3), amount_cents=3_000)

    saga_id = await system.return_order(order, ("apple", 1), refund_cents=1_000, version=1)
    state = await system.settle(saga_id)

    assert (state.status, state.saga_version) == (Status.COMPENSATED, 1)
    assert state.failed_step == "refund_payment"
    commands = await sent_commands(system, saga_id)
    assert commands[3:] == [
        "payment.cancel_refund",
        "inventory.undo_take_back",
        "returns.cancel_return",
    ]
    ledger = await system.payment.refunds.ledger(order)
    assert ledger is not None
    assert ledger["refunds"] == {}
    assert ledger["reversed"] == {saga_id: 1_000}
    assert ledger["refundable_cents"] == 3_000
    apple = await system.levels("apple")
    assert (apple.available, apple.shipped) == (7, 3)
    await system.invariants(STOCK, [order, saga_id])


async def test_the_sample_return_of_saga_dev_returns_the_newest_order(system: System) -> None:
    """The pack's seed returns one unit of the newest completed order and follows it."""
    await system.inventory.inventory.set_stock("apple", 10)
    order = await system.completed_order(("apple", 2), amount_cents=1_250)
    said: list[str] = []

    await seed(system.client, said.append)

    returns = [line for line in said if line.startswith("\nReturned 1 x apple")]
    assert returns, said
    saga_id = returns[0].rsplit("(saga ", 1)[1].rstrip("):")
    state = await system.settle(saga_id)
    assert state.status is Status.COMPLETED
    assert state.data["order_saga_id"] == order
    assert (await system.levels("apple")).available == 9
