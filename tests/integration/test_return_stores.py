"""The return saga's participant stores on the real store: idempotency per return saga,
one return per order, refunds capped at the capture, take-backs that conserve stock,
and compensations that arrive before, after or beside what they undo."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from contracts import AcceptReturn, OrderLine, RefundPayment
from orchestrator.saga.commits import Commit
from orchestrator.saga.state import EventType, SagaEvent
from orchestrator.settings import Settings
from orchestrator.store.mongo import MongoSagaStore
from participants.inventory.returns import ReturnedStockInUse, StockReturns, TakeBackSettled
from participants.payment.refunds import CapturePending, RefundLedger
from participants.returns import MongoReturns, ReturnPolicy

pytestmark = pytest.mark.integration

Db = AsyncDatabase[dict[str, Any]]
APPLES = (OrderLine(sku="apple", quantity=2),)
TTL = "expireAfterSeconds"


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Db]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        settings.require_mongodb_url(), tz_aware=True
    )
    yield client[settings.database]
    await client.close()


# --- payment: refunds -----------------------------------------------------------------


async def captured(db: Db, order: str, cents: int, status: str = "captured") -> None:
    await db["payment_authorizations"].insert_one(
        {"_id": order, "status": status, "amount_cents": cents, "currency": "EUR"}
    )


def refund(order: str, cents: int, currency: str = "EUR") -> RefundPayment:
    return RefundPayment(return_id="r", order_saga_id=order, amount_cents=cents, currency=currency)


async def test_refunds_of_one_order_never_add_up_to_more_than_was_captured(db: Db) -> None:
    """Refunds by three returns of one order: the one that would exceed the capture is
    refused, a repeated refund counts once, and what is left is exact."""
    ledger = RefundLedger(database=db)
    await captured(db, "order-1", 3_000)

    assert (await ledger.refund("r1", refund("order-1", 2_000))).refunded
    too_much = await ledger.refund("r2", refund("order-1", 2_000))
    assert not too_much.refunded
    assert "1000 of the captured payment refundable" in too_much.reason
    assert (await ledger.refund("r3", refund("order-1", 1_000))).refunded
    assert (await ledger.refund("r1", refund("order-1", 2_000))).refunded  # a redelivery
    assert (await ledger.refund("r2", refund("order-1", 1))).reason == too_much.reason

    doc = await ledger.ledger("order-1")
    assert doc is not None
    assert doc["refunds"] == {"r1": 2_000, "r3": 1_000}
    assert doc["refundable_cents"] == 0


async def test_concurrent_refunds_refund_exactly_the_capture(db: Db) -> None:
    """Ten returns of 5.00 against 30.00 at once: exactly six are refunded."""
    ledger = RefundLedger(database=db)
    await captured(db, "order-2", 3_000)

    outcomes = await asyncio.gather(
        *(ledger.refund(f"r{i}", refund("order-2", 500)) for i in range(10))
    )

    assert sum(o.refunded for o in outcomes) == 6
    doc = await ledger.ledger("order-2")
    assert doc is not None
    assert (len(doc["refunds"]), doc["refundable_cents"]) == (6, 0)


async def test_a_cancelled_refund_is_reversed_and_a_late_one_refused(db: Db) -> None:
    """Cancel after the refund reverses it; cancel before the refund (its command still
    in flight) makes the refund refused when it comes; both are safe to repeat."""
    ledger = RefundLedger(database=db)
    await captured(db, "order-3", 1_000)
    await ledger.cancel("early", "order-3")  # opens the ledger without amounts
    assert (await ledger.refund("done", refund("order-3", 600))).refunded

    await ledger.cancel("done", "order-3")
    await ledger.cancel("done", "order-3")
    late = await ledger.refund("early", refund("order-3", 100))

    assert not late.refunded
    assert "cancelled" in late.reason
    assert not (await ledger.refund("done", refund("order-3", 600))).refunded
    doc = await ledger.ledger("order-3")
    assert doc is not None
    assert (doc["refunds"], doc["reversed"], doc["refundable_cents"]) == ({}, {"done": 600}, 1_000)


async def test_a_refusal_repeats_for_its_command_and_is_asked_again_in_a_new_round(
    db: Db,
) -> None:
    """A refused refund stays refused for a redelivery of the command it answered; a new
    round of the step (an operator resumed the parked return, once the goodwill refund
    that made it too much was cancelled) is evaluated again and refunds, once."""
    ledger = RefundLedger(database=db)
    await captured(db, "order-7", 3_000)
    assert (await ledger.refund("goodwill", refund("order-7", 2_000))).refunded
    first = "ret:refund_payment:do"

    refused = await ledger.refund("ret", refund("order-7", 1_500), command_id=first)
    redelivered = await ledger.refund("ret", refund("order-7", 1_500), command_id=first)
    await ledger.cancel("goodwill", "order-7")
    resumed = await ledger.refund("ret", refund("order-7", 1_500), command_id=f"{first}:r1")
    late = await ledger.refund("ret", refund("order-7", 1_500), command_id=first)

    assert not refused.refunded
    assert redelivered == refused
    assert resumed.refunded
    assert late.refunded
    doc = await ledger.ledger("order-7")
    assert doc is not None
    assert (doc["refunds"], doc["refundable_cents"]) == ({"ret": 1_500}, 1_500)
    assert "ret" not in doc["refused"]


async def test_a_late_copy_of_an_earlier_round_does_not_lift_a_newer_refusal(db: Db) -> None:
    """Round r0 refused, the operator resumed (r1), refused again: the return is parked on
    r1's refusal. The goodwill refund is cancelled, then a late copy of r0 (a deadline
    resend that waited in a retry tier) arrives. Its reply's id was processed with r0's
    refusal, so the orchestrator ignores it: it must not move money behind a saga parked
    on a refusal. The next round (r2) refunds, once."""
    ledger = RefundLedger(database=db)
    await captured(db, "order-8", 3_000)
    assert (await ledger.refund("goodwill", refund("order-8", 2_000))).refunded
    r0 = "ret:refund_payment:do"

    assert not (await ledger.refund("ret", refund("order-8", 1_500), command_id=r0)).refunded
    again = await ledger.refund("ret", refund("order-8", 1_500), command_id=f"{r0}:r1")
    await ledger.cancel("goodwill", "order-8")
    late = await ledger.refund("ret", refund("order-8", 1_500), command_id=r0)

    assert not again.refunded
    assert not late.refunded
    doc = await ledger.ledger("order-8")
    assert doc is not None
    assert "ret" not in doc["refunds"]
    assert (await ledger.refund("ret", refund("order-8", 1_500), command_id=f"{r0}:r2")).refunded


async def test_refunds_need_a_captured_payment_in_its_currency(db: Db) -> None:
    """No payment or a voided one: refused. Authorized but not captured yet: retried
    (its capture follows the order's completion). Another currency: refused."""
    ledger = RefundLedger(database=db)
    await captured(db, "voided", 1_000, status="voided")
    await captured(db, "pending", 1_000, status="authorized")
    await captured(db, "euros", 1_000)

    assert "no captured payment (none)" in (await ledger.refund("a", refund("none", 1))).reason
    assert "(voided)" in (await ledger.refund("b", refund("voided", 1))).reason
    with pytest.raises(CapturePending):
        await ledger.refund("c", refund("pending", 1))
    assert "paid in EUR" in (await ledger.refund("d", refund("euros", 1, "USD"))).reason


# --- inventory: take-backs ------------------------------------------------------------


async def stock(db: Db, sku: str, available: int, shipped: int) -> None:
    await db["inventory_stock"].insert_one(
        {"_id": sku, "available": available, "reserved": 0, "shipped": shipped, "holds": {}}
    )


async def levels(db: Db, sku: str) -> tuple[int, int, int]:
    doc = await db["inventory_stock"].find_one({"_id": sku}) or {}
    return doc["available"], doc["reserved"], doc["shipped"]


async def test_take_back_moves_shipped_to_available_once_and_undo_moves_it_back(db: Db) -> None:
    """Taken back twice (a redelivery, and two at once): moved once. Undone twice: moved
    back once. A take-back after its undo is refused and moves nothing."""
    returns = StockReturns(database=db)
    await stock(db, "apple", available=5, shipped=10)

    first, *_ = await asyncio.gather(*(returns.take_back("r1", APPLES) for _ in range(3)))
    assert first.taken_back
    assert (await returns.take_back("r1", APPLES)).taken_back
    assert await levels(db, "apple") == (7, 0, 8)

    await returns.undo("r1")
    await returns.undo("r1")
    assert await levels(db, "apple") == (5, 0, 10)
    late = await returns.take_back("r1", APPLES)
    assert not late.taken_back
    assert await levels(db, "apple") == (5, 0, 10)
    assert await returns.taken_back("r1") == {}


async def test_take_back_is_all_lines_or_none(db: Db) -> None:
    """One line more than was shipped: nothing is taken back, the refusal names it."""
    returns = StockReturns(database=db)
    await stock(db, "apple", available=5, shipped=3)
    await stock(db, "pear", available=5, shipped=1)
    lines = (OrderLine(sku="apple", quantity=2), OrderLine(sku="pear", quantity=2))

    outcome = await returns.take_back("r2", lines)

    assert not outcome.taken_back
    assert outcome.sku == "pear"
    assert await levels(db, "apple") == (5, 0, 3)
    assert await levels(db, "pear") == (5, 0, 1)
    assert not (await returns.take_back("r2", lines)).taken_back  # the same reply again


async def test_undo_waits_while_the_returned_units_are_reserved_elsewhere(db: Db) -> None:
    """Units taken back and then reserved by other orders cannot leave available stock:
    the undo is retried (a transient error), never drives a count negative, and
    completes once they are available again."""
    returns = StockReturns(database=db)
    await stock(db, "apple", available=0, shipped=2)
    assert (await returns.take_back("r3", APPLES)).taken_back
    move = {"$inc": {"available": -2, "reserved": 2}}
    await db["inventory_stock"].update_one({"_id": "apple"}, move)

    with pytest.raises(ReturnedStockInUse):
        await returns.undo("r3")
    assert await levels(db, "apple") == (0, 2, 0)

    await db["inventory_stock"].update_one(
        {"_id": "apple"}, {"$inc": {"available": 2, "reserved": -2}}
    )
    await returns.undo("r3")
    assert await levels(db, "apple") == (0, 0, 2)


async def test_a_settled_take_back_is_final_and_leaves_the_stock_documents(db: Db) -> None:
    """Once its return completed, a take-back is settled: its marks leave the SKU
    documents (its lines stay in the ledger), a repeated take-back or settlement
    changes nothing, and an undo is refused rather than answered as done."""
    returns = StockReturns(database=db)
    await stock(db, "apple", available=5, shipped=10)
    assert (await returns.take_back("r5", APPLES)).taken_back
    assert await returns.taken_back("r5") == {"apple": 2}

    assert await returns.settle("r5")
    assert not await returns.settle("r5")
    doc = await db["inventory_stock"].find_one({"_id": "apple"})
    assert doc is not None
    assert "r5" not in (doc.get("taken_back") or {})
    record = await returns.outcome("r5")
    assert record is not None
    assert (record["status"], record["lines"]) == ("settled", {"apple": 2})

    assert (await returns.take_back("r5", APPLES)).taken_back  # a late copy of the command
    assert await levels(db, "apple") == (7, 0, 8)
    assert await returns.taken_back("r5") == {}
    with pytest.raises(TakeBackSettled):
        await returns.undo("r5")
    assert await levels(db, "apple") == (7, 0, 8)
    assert not await returns.settle("never-taken-back")


async def test_a_take_back_recorded_before_the_ledger_kept_lines_settles_too(db: Db) -> None:
    """A take-back decided by the previous version (its record has no lines, its marks
    are in the SKU documents) loses its marks when its return completes."""
    await db["inventory_stock"].insert_one(
        {"_id": "apple", "available": 7, "reserved": 0, "shipped": 8, "taken_back": {"r6": 2}}
    )
    await db["inventory_returns"].insert_one(
        {"_id": "r6", "status": "taken_back", "reason": "", "sku": None}
    )
    returns = StockReturns(database=db)

    assert await returns.settle("r6")
    assert await returns.taken_back("r6") == {}
    assert await levels(db, "apple") == (7, 0, 8)


async def test_the_take_back_ledger_has_a_retention(db: Db) -> None:
    """The ledger's records expire (a TTL index on decided_at), and a changed retention
    changes the index rather than failing."""
    await StockReturns(database=db, retention_seconds=3600).ensure_indexes()
    await StockReturns(database=db, retention_seconds=7200).ensure_indexes()
    indexes = await db["inventory_returns"].index_information()
    ttl = [i for i in indexes.values() if i["key"] == [("decided_at", 1)]]
    assert [i.get("expireAfterSeconds") for i in ttl] == [7200]


# --- returns: one return per order ----------------------------------------------------


async def completed_order(db: Db, order: str, lines: tuple[OrderLine, ...] = APPLES) -> None:
    """An order-fulfilment saga as the orchestrator stores it: started, completed."""
    now = datetime.now(UTC)
    start = {"order_id": order, "lines": [line.model_dump() for line in lines]}
    events = (
        SagaEvent(
            type=EventType.SAGA_STARTED,
            at=now,
            data={"saga_name": "order_fulfilment", "start": start},
        ),
        SagaEvent(type=EventType.SAGA_COMPLETED, at=now),
    )
    await MongoSagaStore(database=db).append(
        Commit(saga_id=order, version=1, causation_id="start", events=events, created_at=now)
    )


def accept(order: str) -> AcceptReturn:
    return AcceptReturn(return_id="r", order_saga_id=order, lines=APPLES)


async def test_of_concurrent_returns_of_one_order_exactly_one_is_accepted(db: Db) -> None:
    """Five returns of one order at once: one accepted, four refused as already
    returned; each repeats its own outcome when asked again."""
    returns = MongoReturns(database=db, policy=ReturnPolicy())
    await completed_order(db, "order-a")

    outcomes = await asyncio.gather(*(returns.accept(f"r{i}", accept("order-a")) for i in range(5)))

    assert sum(o.accepted for o in outcomes) == 1
    assert all("already returned" in o.reason for o in outcomes if not o.accepted)
    again = [await returns.accept(f"r{i}", accept("order-a")) for i in range(5)]
    assert again == outcomes


async def test_a_cancelled_return_frees_the_order_and_a_late_accept_is_refused(db: Db) -> None:
    """Cancel before the accept arrives: the accept is refused and takes nothing.
    Cancel after it: the order may be returned again by another return."""
    returns = MongoReturns(database=db, policy=ReturnPolicy())
    await completed_order(db, "order-b")

    await returns.cancel("early", "order-b")
    assert not (await returns.accept("early", accept("order-b"))).accepted
    assert await returns.claim_of("order-b") is None
    assert (await returns.accept("first", accept("order-b"))).accepted
    await returns.cancel("first", "order-b")
    await returns.cancel("first", "order-b")
    assert (await returns.accept("second", accept("order-b"))).accepted

    claim = await returns.claim_of("order-b")
    assert claim == {"_id": "order-b", "return_saga_id": "second", "status": "accepted"}
    assert not (await returns.accept("first", accept("order-b"))).accepted


async def test_return_decisions_expire_and_the_claims_on_orders_are_kept(db: Db) -> None:
    """Every decision (accepted, refused, cancelled, a cancel's marker) gets
    ``settled_at`` when written: a cancel needs nothing from it (it finds the claim by
    the order), and a late accept of its own return finds its claim again. The claims on
    orders (one return per order) are business data and never expire. The TTL index has
    the configured seconds, and a changed retention changes it."""
    returns = MongoReturns(database=db, policy=ReturnPolicy(), retention_seconds=3600)
    await returns.ensure_indexes()
    await completed_order(db, "order-c")
    await completed_order(db, "order-d")

    assert (await returns.accept("kept", accept("order-c"))).accepted
    assert not (await returns.accept("refused", accept("order-c"))).accepted
    assert (await returns.accept("withdrawn", accept("order-d"))).accepted
    await returns.cancel("withdrawn", "order-d")
    await returns.cancel("cancelled-first", "order-d")

    decisions = await db["returns_decisions"].find({}, {"settled_at": 1}).to_list(None)
    assert {d["_id"]: isinstance(d.get("settled_at"), datetime) for d in decisions} == {
        "kept": True,
        "refused": True,
        "withdrawn": True,
        "cancelled-first": True,
    }
    claims = await db["returns_orders"].find({}).to_list(None)
    assert len(claims) == 2
    assert not any("settled_at" in c for c in claims)

    def ttl(indexes: dict[str, Any]) -> list[tuple[Any, int]]:
        return [(i["key"], i[TTL]) for i in indexes.values() if TTL in i]

    assert ttl(await db["returns_decisions"].index_information()) == [([("settled_at", 1)], 3600)]
    assert ttl(await db["returns_orders"].index_information()) == []
    await MongoReturns(database=db, policy=ReturnPolicy(), retention_seconds=7200).ensure_indexes()
    assert ttl(await db["returns_decisions"].index_information()) == [([("settled_at", 1)], 7200)]
