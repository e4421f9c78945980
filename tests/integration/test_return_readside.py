"""The read side's stock levels after a return: the stock projection must follow the
inventory when goods come back, as it does when they are reserved, shipped or restocked."""

from __future__ import annotations

import pytest

from orchestrator.messaging.envelope import build_message
from orchestrator.packs.order_fulfilment.commands import restock
from orchestrator.packs.order_fulfilment.readside import StockReadSide
from orchestrator.readside import ReadSideService, extensions_of, rebuild_projections
from orchestrator.readside.summaries import progress_history
from orchestrator.saga.state import Status
from tests.helpers import eventually, movements_settled
from tests.integration.conftest import System
from tests.integration.test_return_saga import goodwill_refund

pytestmark = pytest.mark.integration


async def test_the_stock_projection_follows_a_completed_return(system: System) -> None:
    """Scenario: restock 10 apples; an order of 3 completes and ships; a return of 2
    completes. The inventory has 9 available, 1 shipped; so must the projection."""
    readside = ReadSideService(system.settings)
    await system.start_extra(readside)
    projection = readside.extensions["order_fulfilment"]
    assert isinstance(projection, StockReadSide)
    await restock(system.client, "apple", 10)
    await eventually(
        lambda: system.levels("apple"), until=lambda lv: lv.available == 10, what="restock"
    )
    order = await system.completed_order(("apple", 3), amount_cents=3_000)
    saga_id = await system.return_order(order, ("apple", 2), refund_cents=2_000)
    assert (await system.settle(saga_id)).status is Status.COMPLETED
    apple = await system.levels("apple")
    assert (apple.available, apple.reserved, apple.shipped) == (9, 0, 1)

    async def projected() -> tuple[int, int, int]:
        levels = (await projection.stock.levels(["apple"]))["apple"]
        return (levels.available, levels.reserved, levels.shipped)

    await eventually(projected, until=lambda got: got == (9, 0, 1), timeout=15, what="projection")


async def test_an_undone_take_back_counts_once_under_redelivery_and_in_a_rebuild(
    system: System,
) -> None:
    """Scenario: restock 10 apples; an order of 3 completes; a return of 2 (on v1) is
    taken back, then undone (payment refuses its refund: less is refundable after a
    goodwill refund);
    a second return of 1 completes. Every progress event of both returns is delivered
    again, twice, newest first. The projection counts each take-back and its undo once
    (8 available, 2 shipped, as the inventory), and a rebuild writes the same documents."""
    readside = ReadSideService(system.settings)
    await system.start_extra(readside)
    projection = readside.extensions["order_fulfilment"]
    assert isinstance(projection, StockReadSide)
    await restock(system.client, "apple", 10)
    await eventually(
        lambda: system.levels("apple"), until=lambda lv: lv.available == 10, what="restock"
    )
    order = await system.completed_order(("apple", 3), amount_cents=3_000)
    await goodwill_refund(system, order, captured=3_000, refunded=2_500)
    # on v1, whose refused refund undoes the take-back (v2 parks such a return)
    undone = await system.return_order(order, ("apple", 2), refund_cents=1_000, version=1)
    assert (await system.settle(undone)).status is Status.COMPENSATED
    kept = await system.return_order(order, ("apple", 1), refund_cents=500)
    assert (await system.settle(kept)).status is Status.COMPLETED
    apple = await system.levels("apple")
    assert (apple.available, apple.reserved, apple.shipped) == (8, 0, 2)

    topology = system.settings.topology()
    for saga_id in (undone, kept):
        history = list(enumerate(await progress_history(system.orchestrator.store, saga_id), 1))
        for _ in range(2):
            for version, event in reversed(history):
                await system.client.bus.publish(
                    build_message(
                        event, message_id=f"{saga_id}:v{version}", correlation_id=saga_id
                    ),
                    exchange=topology.events_exchange,
                    routing_key="order_return.progressed",
                    mandatory=False,
                )

    async def projected() -> tuple[int, int, int]:
        levels = (await projection.stock.levels(["apple"]))["apple"]
        return (levels.available, levels.reserved, levels.shipped)

    await eventually(projected, until=lambda got: got == (8, 0, 2), timeout=15, what="projection")
    rows = readside.db["readside_stock_sagas"]

    async def settled_rows() -> list[dict[str, object]]:
        return await rows.find({"_id": {"$in": [undone, kept]}}).sort("_id", 1).to_list(None)

    await eventually(
        settled_rows,
        until=lambda found: len(found) == 2 and not any("pending" in r for r in found),
        what="return rows settled",
    )
    await movements_settled(readside.db)  # the order's row, the restock, the marks
    names = ("readside_stock_sagas", "readside_stock_levels", "readside_restocks")
    before = {n: await readside.db[n].find({}).sort("_id", 1).to_list(None) for n in names}
    await rebuild_projections(readside.db, extensions=extensions_of(system.settings, readside.db))
    after = {n: await readside.db[n].find({}).sort("_id", 1).to_list(None) for n in names}
    assert after == before
    assert await projected() == (8, 0, 2)
