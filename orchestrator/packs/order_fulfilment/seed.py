"""Sample data for ``saga-dev``: stock for three SKUs, then one order, followed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from contracts import OrderLine, PlaceOrder
from orchestrator.packs.order_fulfilment.commands import restock
from orchestrator.packs.order_fulfilment.inventory_view import inventory_levels

if TYPE_CHECKING:
    from orchestrator.client import SagaClient

__all__ = ["SAMPLE_STOCK", "seed"]

SAMPLE_STOCK = {"apple": 100, "pear": 50, "gpu": 3}


async def seed(client: SagaClient, say: Callable[[str], None]) -> None:
    """Give the sample SKUs stock (first run only), place a sample order, follow it."""
    database = client.store.commits.database
    for sku, units in SAMPLE_STOCK.items():
        if (await inventory_levels(database, sku)).total == 0:
            await restock(client, sku, units, restock_id=f"seed-{sku}")
    deadline = time.monotonic() + 30
    while [s for s in SAMPLE_STOCK if (await inventory_levels(database, s)).total == 0]:
        if time.monotonic() > deadline:
            raise RuntimeError("inventory did not take the sample stock; see its log")
        await asyncio.sleep(0.1)
    order = PlaceOrder(
        order_id=f"sample-{int(time.time())}",
        customer_id="customer-42",
        lines=(OrderLine(sku="apple", quantity=2), OrderLine(sku="pear", quantity=1)),
        amount_cents=1_250,
        ship_to="1 Main Street, Springfield",
    )
    saga_id = await client.start(order)
    say(f"\nPlaced sample order {order.order_id} (saga {saga_id}):")
    await client.follow(saga_id, say)
    for sku in SAMPLE_STOCK:
        lv = await inventory_levels(database, sku)
        say(
            f"  stock {sku:<6} available {lv.available:<4} reserved {lv.reserved:<4} "
            f"shipped {lv.shipped}"
        )
