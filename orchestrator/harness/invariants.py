"""The invariants of DESIGN.md, checked against the stores of a running system.

* stock conservation: per SKU, available + reserved + shipped equals the initial total,
  no count is negative, and the units held per saga add up to ``reserved``;
* payments: at most one authorization per saga (the document id is the saga id), and
  once settled none is left authorized: a completed saga's payment is captured, any
  other saga's is declined, voided or absent;
* sagas: every saga is terminal, or parked (compensation_failed) with a reason;
* a completed saga's stock is shipped; a failed or compensated saga holds no stock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.mongo_store import MongoSagaStore
from orchestrator.state import Status

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

__all__ = ["InvariantReport", "check_invariants"]


@dataclass
class InvariantReport:
    """What the check found: violations (empty if all hold) and saga outcomes."""

    violations: list[str] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    parked: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """All invariants hold."""
        return not self.violations

    def __str__(self) -> str:
        head = ", ".join(f"{k}={v}" for k, v in sorted(self.outcomes.items()))
        if self.ok:
            return f"invariants hold ({head})"
        return f"{len(self.violations)} violations ({head}):\n  " + "\n  ".join(
            self.violations[:20]
        )


async def check_invariants(
    db: AsyncDatabase[dict[str, Any]],
    *,
    saga_ids: Iterable[str],
    initial_stock: Mapping[str, int],
) -> InvariantReport:
    """Check every invariant for these sagas and SKUs; never raises on a violation."""
    report = InvariantReport()
    await _check_stock(db, initial_stock, report)
    store = MongoSagaStore(database=db)
    payments = db["payment_authorizations"]
    reservations = db["inventory_reservations"]
    for saga_id in saga_ids:
        state = await store.load(saga_id)
        status = state.status.value if state.status else "unknown"
        report.outcomes[status] += 1
        if state.status is None or not state.status.settled:
            report.violations.append(f"saga {saga_id} not settled: {status} at {state.step}")
            continue
        if state.status is Status.COMPENSATION_FAILED:
            report.parked[saga_id] = state.parked_reason or ""
            if not state.parked_reason:
                report.violations.append(f"saga {saga_id} parked without a reason")
            continue
        payment = await payments.find_one({"_id": saga_id})
        pay_status = payment["status"] if payment else None
        reservation = await reservations.find_one({"_id": saga_id})
        res_status = reservation["status"] if reservation else None
        if state.status is Status.COMPLETED:
            if pay_status != "captured":
                report.violations.append(f"saga {saga_id} completed, payment {pay_status}")
            if res_status != "shipped":
                report.violations.append(f"saga {saga_id} completed, stock {res_status}")
        else:
            if pay_status not in (None, "declined", "voided"):
                report.violations.append(f"saga {saga_id} {status}, payment {pay_status}")
            if res_status in ("reserving", "reserved", "shipped"):
                report.violations.append(f"saga {saga_id} {status}, stock {res_status}")
    return report


async def _check_stock(
    db: AsyncDatabase[dict[str, Any]], initial: Mapping[str, int], report: InvariantReport
) -> None:
    for sku, total in initial.items():
        doc = await db["inventory_stock"].find_one({"_id": sku}) or {}
        available = doc.get("available", 0)
        reserved = doc.get("reserved", 0)
        shipped = doc.get("shipped", 0)
        held = sum((doc.get("holds") or {}).values())
        if available + reserved + shipped != total:
            report.violations.append(
                f"stock {sku}: {available}+{reserved}+{shipped} != initial {total}"
            )
        if min(available, reserved, shipped) < 0:
            report.violations.append(f"stock {sku} negative: {available}/{reserved}/{shipped}")
        if held != reserved:
            report.violations.append(f"stock {sku}: holds add up to {held}, reserved {reserved}")
