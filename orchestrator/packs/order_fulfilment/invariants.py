"""The order pack's invariants, checked by the harness after the generic ones.

* stock conservation: per SKU, available + reserved + shipped equals the initial total,
  no count is negative, and the units held per saga add up to ``reserved``;
* no stray holds: every hold belongs to a reservation in the ``reserved`` state that
  counts on it (the same token); a hold of a released, failed, shipped or unknown
  reservation is stock that nothing will ever give back;
* payments: at most one authorization per saga (the document id is the saga id), and
  once settled none is left authorized: a completed saga's payment is captured, any
  other saga's is declined, voided or absent;
* a completed saga's stock is shipped; a failed or compensated saga holds no stock.

"Completed implies captured and shipped" holds for every completed order saga, whatever
its version: v2 captures and ships in its own retriable steps before it completes, v1
and the parallel variant leave it to the payment and inventory services' reaction to
the outcome event (the harness waits for that to settle).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from orchestrator.packs.order_fulfilment.definition import ORDER_SAGAS
from orchestrator.saga.state import Status

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

    from orchestrator.dev.harness.invariants import InvariantReport
    from orchestrator.saga.state import SagaState

__all__ = ["check"]


async def check(
    db: AsyncDatabase[dict[str, Any]],
    *,
    states: Mapping[str, SagaState],
    report: InvariantReport,
    facts: Mapping[str, Any],
    all_sagas: bool,
) -> None:
    """Stock and payment invariants over the order sagas among ``states``."""
    await _check_stock(db, facts.get("initial_stock") or {}, report)
    orders = {k: v for k, v in states.items() if v.saga_name in ORDER_SAGAS}
    await _check_orders(db, orders, report)
    if all_sagas:
        await _check_stray_payments(db, set(states), report)


async def _check_orders(
    db: AsyncDatabase[dict[str, Any]], states: Mapping[str, SagaState], report: InvariantReport
) -> None:
    payments = db["payment_authorizations"]
    reservations = db["inventory_reservations"]
    for saga_id, state in states.items():
        if state.status is None or not state.status.terminal:
            continue
        status = state.status.value
        payment = await payments.find_one({"_id": saga_id})
        pay_status = payment["status"] if payment else None
        reservation = await reservations.find_one({"_id": saga_id})
        res_status = reservation["status"] if reservation else None
        if state.status is Status.COMPLETED:
            if pay_status != "captured":
                report.add("payments", f"saga {saga_id} completed, payment {pay_status}")
            if res_status != "shipped":
                report.add("stock", f"saga {saga_id} completed, stock {res_status}")
        else:
            if pay_status not in (None, "declined", "voided"):
                report.add("payments", f"saga {saga_id} {status}, payment {pay_status}")
            if res_status in ("reserving", "reserved", "shipped"):
                report.add("stock", f"saga {saga_id} {status}, stock {res_status}")


async def _check_stray_payments(
    db: AsyncDatabase[dict[str, Any]], known: set[str], report: InvariantReport
) -> None:
    """No authorization of a saga the store does not know is left authorized."""
    async for doc in db["payment_authorizations"].find({"status": "authorized"}, {"_id": 1}):
        if doc["_id"] not in known:
            report.add("payments", f"payment {doc['_id']} of no known saga left authorized")


async def _check_stock(
    db: AsyncDatabase[dict[str, Any]], initial: Mapping[str, int], report: InvariantReport
) -> None:
    for sku, total in initial.items():
        doc = await db["inventory_stock"].find_one({"_id": sku}) or {}
        available = doc.get("available", 0)
        reserved = doc.get("reserved", 0)
        shipped = doc.get("shipped", 0)
        holds: dict[str, Any] = doc.get("holds") or {}
        held = sum(_units(h) for h in holds.values())
        if available + reserved + shipped != total:
            report.add("stock", f"stock {sku}: {available}+{reserved}+{shipped} != initial {total}")
        if min(available, reserved, shipped) < 0:
            report.add("stock", f"stock {sku} negative: {available}/{reserved}/{shipped}")
        if held != reserved:
            report.add("stock", f"stock {sku}: holds add up to {held}, reserved {reserved}")
        await _check_holds(db, sku, holds, report)


async def _check_holds(
    db: AsyncDatabase[dict[str, Any]], sku: str, holds: Mapping[str, Any], report: InvariantReport
) -> None:
    """Each hold on ``sku`` is counted on by a reserved reservation."""
    if not holds:
        return
    found = db["inventory_reservations"].find({"_id": {"$in": list(holds)}})
    reservations = {doc["_id"]: doc async for doc in found}
    for saga_id, hold in holds.items():
        reservation = reservations.get(saga_id)
        status = reservation["status"] if reservation else "absent"
        if status != "reserved":
            report.add(
                "stock",
                f"stock {sku}: saga {saga_id} holds {_units(hold)} units, "
                f"its reservation is {status}",
            )
            continue
        assert reservation is not None
        counted = {x["sku"]: x.get("token") or "" for x in reservation["lines"]}
        if sku not in counted or counted[sku] != _token(hold):
            report.add(
                "stock",
                f"stock {sku}: saga {saga_id} holds {_units(hold)} units its reserved "
                "reservation does not count on",
            )


def _units(hold: Any) -> int:
    """Units of a hold: ``{"n": units, "t": token}`` (a plain number before tokens)."""
    return int(hold["n"]) if isinstance(hold, dict) else int(hold)


def _token(hold: Any) -> str:
    return str(hold.get("t", "")) if isinstance(hold, dict) else ""
