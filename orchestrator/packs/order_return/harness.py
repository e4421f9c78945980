"""Building blocks of the return pack's scenarios: stock, completed orders, returns.

A return needs an order that completed, whose stock was shipped and whose payment was
captured. The scenarios place those orders through the order saga (its contracts only,
none of the order pack's code) and wait for them to settle before returning them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from contracts import OrderLine, PlaceOrder, RequestReturn
from orchestrator.client import new_saga_id

if TYPE_CHECKING:
    from orchestrator.dev.harness.scenario import Run

__all__ = ["AMOUNT_CENTS", "completed_orders", "request_return", "stock_up"]

AMOUNT_CENTS = 1_000
"""What every harness order costs (and so what a return may refund at most)."""
SKU = "boot"


async def stock_up(run: Run, **units: int) -> None:
    """Set the stock of some SKUs before any saga runs (the inventory's documents, as
    the inventory writes them); the invariants check that exactly this much exists at
    the end."""
    initial = run.facts.setdefault("initial_stock", {})
    for sku, n in units.items():
        await run.deployment.db["inventory_stock"].update_one(
            {"_id": sku},
            {"$set": {"available": n, "reserved": 0, "shipped": 0, "holds": {}}},
            upsert=True,
        )
        initial[sku] = n


async def completed_orders(run: Run, n: int, *, units: int = 2) -> list[str]:
    """Place ``n`` orders of ``units`` boots and wait until each completed, shipped its
    stock and captured its payment; their saga ids."""
    await stock_up(run, **{SKU: n * units})
    orders = [
        PlaceOrder(
            order_id=f"order-{new_saga_id()[:10]}",
            customer_id="harness-returns",
            lines=(OrderLine(sku=SKU, quantity=units),),
            amount_cents=AMOUNT_CENTS,
            ship_to="1 Main Street, Springfield",
        )
        for _ in range(n)
    ]
    ids = await run.place(orders)
    db = run.deployment.db

    async def settled() -> bool:
        shipped = await _count(db, "inventory_reservations", ids, "shipped")
        captured = await _count(db, "payment_authorizations", ids, "captured")
        return shipped == captured == len(ids)

    await run.until(settled, "orders completed, shipped and captured", timeout=90)
    return ids


def request_return(order_saga_id: str, *, units: int = 1, refund_cents: int) -> RequestReturn:
    """A return of ``units`` boots of a harness order."""
    return RequestReturn(
        return_id=f"return-{new_saga_id()[:10]}",
        order_saga_id=order_saga_id,
        lines=(OrderLine(sku=SKU, quantity=units),),
        refund_cents=refund_cents,
        reason="harness",
    )


async def _count(db: Any, collection: str, ids: Sequence[str], status: str) -> int:
    return int(await db[collection].count_documents({"_id": {"$in": list(ids)}, "status": status}))
