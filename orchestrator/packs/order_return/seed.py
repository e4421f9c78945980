"""Sample data for ``saga-dev``: a return of the order the order pack's seed placed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from contracts import OrderLine, RequestReturn
from orchestrator.saga.state import Status

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

    from orchestrator.client import SagaClient

__all__ = ["seed"]

ORDER_SAGA = "order_fulfilment"


async def seed(client: SagaClient, say: Callable[[str], None]) -> None:
    """Return one unit of the newest completed order (once its stock is shipped and its
    payment captured), refunding a part of it, and follow the return."""
    commits = client.store.commits
    done = await commits.find_one(
        {"saga_name": ORDER_SAGA, "status": Status.COMPLETED.value}, sort=[("created_at", -1)]
    )
    if done is None:
        say("\nNo completed order to return yet; the sample return is skipped.")
        return
    order = await client.state(done["saga_id"])
    deadline = time.monotonic() + 30
    while not await _settled(commits.database, order.saga_id):
        if time.monotonic() > deadline:
            say(f"\nOrder {order.reference} was not shipped and captured; no sample return.")
            return
        await asyncio.sleep(0.1)
    line = order.data["lines"][0]
    command = RequestReturn(
        return_id=f"return-{int(time.time())}",
        order_saga_id=order.saga_id,
        lines=(OrderLine(sku=line["sku"], quantity=1),),
        refund_cents=min(500, int(order.data.get("amount_cents", 0))),
        reason="sample return",
    )
    saga_id = await client.start(command)
    say(f"\nReturned 1 x {line['sku']} of {order.reference} (saga {saga_id}):")
    await client.follow(saga_id, say)


async def _settled(database: AsyncDatabase[dict[str, Any]], order_saga: str) -> bool:
    """The order's stock shipped and its payment captured: what a return needs."""
    shipped = await database["inventory_reservations"].find_one({"_id": order_saga}) or {}
    paid = await database["payment_authorizations"].find_one({"_id": order_saga}) or {}
    return shipped.get("status") == "shipped" and paid.get("status") == "captured"
