"""Building blocks of the order pack's scenarios: orders, stock, order mixes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from contracts import OrderLine, PlaceOrder
from orchestrator.client import new_saga_id
from orchestrator.packs.order_fulfilment.inventory_view import set_stock

if TYPE_CHECKING:
    from orchestrator.dev.harness.scenario import Run

__all__ = ["UNDELIVERABLE", "mixed", "order", "stock_up"]

UNDELIVERABLE = "Atlantis"  # the shipping service's default refusal


def order(
    *lines: tuple[str, int], ship_to: str = "1 Main Street, Springfield", amount_cents: int = 1000
) -> PlaceOrder:
    """An order with a fresh order id."""
    return PlaceOrder(
        order_id=f"order-{new_saga_id()[:10]}",
        customer_id="harness",
        lines=tuple(OrderLine(sku=s, quantity=q) for s, q in lines),
        amount_cents=amount_cents,
        ship_to=ship_to,
    )


async def stock_up(run: Run, **units: int) -> None:
    """Set the stock of some SKUs (before any saga runs); the invariants check that
    exactly this much stock exists at the end."""
    initial = run.facts.setdefault("initial_stock", {})
    for sku, n in units.items():
        await set_stock(run.deployment.db, sku, n)
        initial[sku] = n


def mixed(n: int) -> tuple[list[PlaceOrder], int]:
    """``n`` orders of one or two lines; every fifth ships to a place shipping refuses.
    Returns the orders and how many of them will be compensated."""
    orders = [
        order(
            ("apple", 1),
            *((("pear", 1),) if i % 2 else ()),
            ship_to=UNDELIVERABLE if i % 5 == 4 else "1 Main Street",
        )
        for i in range(n)
    ]
    return orders, sum(1 for i in range(n) if i % 5 == 4)
