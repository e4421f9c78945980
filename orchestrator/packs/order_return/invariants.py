"""The return pack's invariants, checked by the harness after the generic ones.

* ``refunds``: per order, the refunds add up to at most what was captured, and to
  exactly captured minus what is still refundable; a completed return was refunded
  exactly once: its refund, of the amount it asked, recorded and neither reversed nor
  cancelled; a failed or compensated return has none, and neither has a return parked
  (``completing_stuck``) because payment refused its refund;
* ``returned_stock``: a completed return has exactly its lines taken back (its record
  in the inventory's take-back ledger, ``inventory_returns``), and in the SKU documents
  either its marks of those lines or, once settled, none; so has a return parked on its
  refund (past the pivot the goods stay taken back); a failed or compensated one took
  nothing back and has no marks; the units of an order taken back are at most the
  units on the order; and no stock count is negative.

Conservation of available + reserved + shipped per SKU is the inventory's invariant,
checked by the order pack's ``stock`` check: taking goods back moves units between
those counts and must never change their sum.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from orchestrator.saga.state import Status
from orchestrator.store.mongo import MongoSagaStore

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

    from orchestrator.dev.harness.invariants import InvariantReport
    from orchestrator.saga.state import SagaState

__all__ = ["CHECKS", "check"]

SAGA = "order_return"
CHECKS = ("refunds", "returned_stock")
Doc = dict[str, Any]


async def check(
    db: AsyncDatabase[Doc],
    *,
    states: Mapping[str, SagaState],
    report: InvariantReport,
    facts: Mapping[str, Any],
    all_sagas: bool,
) -> None:
    """Refund and stock invariants over the return sagas among ``states``."""
    del facts
    returns = {k: v for k, v in states.items() if v.saga_name == SAGA and v.status}
    for saga_id, state in returns.items():
        if state.status is Status.COMPLETING_STUCK:
            await _check_parked(db, saga_id, state, report)
        elif state.status is not None and state.status.terminal:
            await _check_return(db, saga_id, state, report)
    orders = {str(s.data.get("order_saga_id")) for s in returns.values()}
    ledgers = db["payment_refunds"].find({} if all_sagas else {"_id": {"$in": sorted(orders)}})
    async for ledger in ledgers:
        await _check_ledger(db, ledger, report)
    await _check_order_units(db, returns, report)
    await _check_stock_counts(db, report)
    if all_sagas:
        await _check_strays(db, set(returns), report)


async def _check_return(
    db: AsyncDatabase[Doc], saga_id: str, state: SagaState, report: InvariantReport
) -> None:
    start = state.data
    ledger = await _ledger(db, state)
    refund = (ledger.get("refunds") or {}).get(saga_id)
    marks = await _marks(db, saga_id)
    taken, settled = await _taken(db, saga_id)
    wanted = _lines(state)
    status = state.status.value if state.status else "unknown"
    if state.status is Status.COMPLETED:
        if refund != start.get("refund_cents"):
            report.add("refunds", f"return {saga_id} completed, refund {refund}")
        undone = [k for k in ("reversed", "cancelled") if saga_id in (ledger.get(k) or {})]
        if undone:
            report.add("refunds", f"return {saga_id} completed, its refund {undone[0]}")
        if taken != wanted:
            report.add("returned_stock", f"return {saga_id} completed, taken back {taken}")
        if marks != ({} if settled else wanted):
            settling = "settled" if settled else "not settled"
            report.add("returned_stock", f"return {saga_id} completed ({settling}), marks {marks}")
        return
    if refund is not None:
        report.add("refunds", f"return {saga_id} {status}, yet refunded {refund}")
    if marks or taken:
        report.add("returned_stock", f"return {saga_id} {status}, yet took back {taken or marks}")


async def _check_parked(
    db: AsyncDatabase[Doc], saga_id: str, state: SagaState, report: InvariantReport
) -> None:
    """A return parked on its refund (v2, past the pivot): the goods stay taken back,
    and a refund payment refused moved no money. (Parked for lack of replies, the
    refund may have happened: its reply is what never came.)"""
    if state.parked_steps != ("refund_payment",):
        return
    taken, _ = await _taken(db, saga_id)
    if taken != _lines(state):
        report.add("returned_stock", f"return {saga_id} parked on its refund, taken back {taken}")
    refund = ((await _ledger(db, state)).get("refunds") or {}).get(saga_id)
    if refund is not None and (state.parked_reason or "").startswith("refund_payment refused"):
        report.add("refunds", f"return {saga_id} parked on a refused refund, yet refunded {refund}")


def _lines(state: SagaState) -> dict[str, int]:
    """The units a return asks to take back, per SKU."""
    return {line["sku"]: int(line["quantity"]) for line in state.data.get("lines", [])}


async def _ledger(db: AsyncDatabase[Doc], state: SagaState) -> Doc:
    """The refund ledger of the return's order (empty if payment has none)."""
    found: Doc | None = await db["payment_refunds"].find_one(
        {"_id": state.data.get("order_saga_id")}
    )
    return found or {}


async def _check_ledger(db: AsyncDatabase[Doc], ledger: Doc, report: InvariantReport) -> None:
    order = ledger["_id"]
    refunded = sum((ledger.get("refunds") or {}).values())
    if "refundable_cents" not in ledger:
        if refunded:
            report.add("refunds", f"order {order}: {refunded} refunded with no capture known")
        return
    captured, refundable = ledger.get("captured_cents", 0), ledger["refundable_cents"]
    payment = await db["payment_authorizations"].find_one({"_id": order}) or {}
    if payment.get("status") != "captured" or payment.get("amount_cents") != captured:
        report.add("refunds", f"order {order}: ledger says {captured} captured, payment {payment}")
    if refunded > captured or refundable < 0:
        report.add("refunds", f"order {order}: {refunded} refunded of {captured} captured")
    if refunded != captured - refundable:
        report.add(
            "refunds", f"order {order}: {refunded} refunded, {refundable} of {captured} left"
        )


async def _check_order_units(
    db: AsyncDatabase[Doc], returns: Mapping[str, SagaState], report: InvariantReport
) -> None:
    """The units taken back for an order are at most the units it had."""
    back: dict[str, Counter[str]] = {}
    for saga_id, state in returns.items():
        order = str(state.data.get("order_saga_id"))
        back.setdefault(order, Counter()).update((await _taken(db, saga_id))[0])
    store = MongoSagaStore(database=db)
    for order, units in back.items():
        data = (await store.load(order)).data
        ordered = Counter({x["sku"]: int(x["quantity"]) for x in data.get("lines", [])})
        if units - ordered:
            report.add("returned_stock", f"order {order}: {dict(units)} taken back of {ordered}")


async def _check_stock_counts(db: AsyncDatabase[Doc], report: InvariantReport) -> None:
    async for doc in db["inventory_stock"].find({}):
        counts = [doc.get(k, 0) for k in ("available", "reserved", "shipped")]
        if min(counts) < 0:
            report.add("returned_stock", f"stock {doc['_id']} negative: {counts}")


async def _check_strays(db: AsyncDatabase[Doc], known: set[str], report: InvariantReport) -> None:
    """No units or money moved for a return saga the store does not know."""
    async for doc in db["inventory_stock"].find({"taken_back": {"$exists": True}}):
        for saga_id in set(doc.get("taken_back") or {}) - known:
            report.add("returned_stock", f"stock {doc['_id']} taken back by unknown {saga_id}")
    async for ledger in db["payment_refunds"].find({}):
        for saga_id in set(ledger.get("refunds") or {}) - known:
            report.add("refunds", f"order {ledger['_id']} refunded by unknown {saga_id}")


async def _taken(db: AsyncDatabase[Doc], saga_id: str) -> tuple[dict[str, int], bool]:
    """The units the inventory's ledger says this return took back (and keeps), and
    whether it is settled (its marks removed). A record written before the ledger kept
    its lines: the marks."""
    record = await db["inventory_returns"].find_one({"_id": saga_id}) or {}
    if record.get("status") not in ("taken_back", "settled"):
        return {}, False
    lines = record.get("lines")
    if not isinstance(lines, dict):
        return await _marks(db, saga_id), False
    return {sku: int(n) for sku, n in lines.items()}, record["status"] == "settled"


async def _marks(db: AsyncDatabase[Doc], saga_id: str) -> dict[str, int]:
    mark = f"taken_back.{saga_id}"
    docs = db["inventory_stock"].find({mark: {"$exists": True}}, {"taken_back": 1})
    return {d["_id"]: int(d["taken_back"][saga_id]) async for d in docs}
