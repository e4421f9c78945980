"""The invariants of DESIGN.md, checked against the stores of a running system.

* stock conservation: per SKU, available + reserved + shipped equals the initial total,
  no count is negative, and the units held per saga add up to ``reserved``;
* payments: at most one authorization per saga (the document id is the saga id), and
  once settled none is left authorized: a completed saga's payment is captured, any
  other saga's is declined, voided or absent;
* sagas: every saga is terminal, or parked (compensation_failed) with a reason;
* a completed saga's stock is shipped; a failed or compensated saga holds no stock;
* dead letters (when given): each dead-letter queue holds exactly the messages the
  scenario expects, counted by ``x-error-reason``.

Each violation belongs to one of :data:`CHECKS`, so a report says which invariant failed.
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

__all__ = [
    "CHECKS",
    "DeadLetterCounts",
    "InvariantReport",
    "check_invariants",
    "compare_dead_letters",
]

CHECKS = ("stock", "payments", "sagas", "dead_letters")
"""The invariants, by name: stock conserved; no payment authorized twice or left
authorized; every saga terminal or parked with a reason; dead letters as expected."""

DeadLetterCounts = Mapping[str, Mapping[str, int]]
"""Work queue (without namespace, e.g. ``payment.commands``) -> error reason -> messages."""


@dataclass
class InvariantReport:
    """What the check found: violations (empty if all hold) and saga outcomes."""

    violations: list[str] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    parked: dict[str, str] = field(default_factory=dict)
    failures: Counter[str] = field(default_factory=Counter)
    """Violations per check of :data:`CHECKS` (absent: it held)."""

    @property
    def ok(self) -> bool:
        """All invariants hold."""
        return not self.violations

    def add(self, check: str, violation: str) -> None:
        """Record a violation of ``check``."""
        self.failures[check] += 1
        self.violations.append(violation)

    def passed(self, check: str) -> bool:
        """Whether ``check`` held."""
        return not self.failures[check]

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
    dead_letters: DeadLetterCounts | None = None,
    expected_dead_letters: DeadLetterCounts | None = None,
    all_sagas: bool = False,
) -> InvariantReport:
    """Check every invariant for these sagas and SKUs; never raises on a violation.

    Dead letters are checked when ``dead_letters`` (what the queues hold) is given: they
    must equal ``expected_dead_letters`` (default: none anywhere). With ``all_sagas``,
    ``saga_ids`` are all the sagas of the database, so an authorization of any other
    saga left authorized is a violation too.
    """
    report = InvariantReport()
    saga_ids = list(saga_ids)
    await _check_stock(db, initial_stock, report)
    if dead_letters is not None:
        for violation in compare_dead_letters(dead_letters, expected_dead_letters or {}):
            report.add("dead_letters", violation)
    await _check_sagas(db, saga_ids, report)
    if all_sagas:
        await _check_stray_payments(db, set(saga_ids), report)
    return report


def compare_dead_letters(found: DeadLetterCounts, expected: DeadLetterCounts) -> list[str]:
    """Differences between what dead-letter queues hold and what was expected."""
    problems = []
    for queue in sorted(set(found) | set(expected)):
        have = {r: n for r, n in (found.get(queue) or {}).items() if n}
        want = {r: n for r, n in (expected.get(queue) or {}).items() if n}
        if have != want:
            problems.append(f"dead letters of {queue}: {_counts(have)}, expected {_counts(want)}")
    return problems


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{r}={n}" for r, n in sorted(counts.items())) or "none"


async def _check_stray_payments(
    db: AsyncDatabase[dict[str, Any]], known: set[str], report: InvariantReport
) -> None:
    """No authorization of a saga the store does not know is left authorized."""
    async for doc in db["payment_authorizations"].find({"status": "authorized"}, {"_id": 1}):
        if doc["_id"] not in known:
            report.add("payments", f"payment {doc['_id']} of no known saga left authorized")


async def _check_sagas(
    db: AsyncDatabase[dict[str, Any]], saga_ids: Iterable[str], report: InvariantReport
) -> None:
    store = MongoSagaStore(database=db)
    payments = db["payment_authorizations"]
    reservations = db["inventory_reservations"]
    for saga_id in saga_ids:
        state = await store.load(saga_id)
        status = state.status.value if state.status else "unknown"
        report.outcomes[status] += 1
        if state.status is None or not state.status.settled:
            report.add("sagas", f"saga {saga_id} not settled: {status} at {state.step}")
            continue
        if state.status is Status.COMPENSATION_FAILED:
            report.parked[saga_id] = state.parked_reason or ""
            if not state.parked_reason:
                report.add("sagas", f"saga {saga_id} parked without a reason")
            continue
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
            report.add("stock", f"stock {sku}: {available}+{reserved}+{shipped} != initial {total}")
        if min(available, reserved, shipped) < 0:
            report.add("stock", f"stock {sku} negative: {available}/{reserved}/{shipped}")
        if held != reserved:
            report.add("stock", f"stock {sku}: holds add up to {held}, reserved {reserved}")
