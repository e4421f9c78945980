"""Rebuild every projection from the event store (and the inventory's restock ledger)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from participants.readside.analytics import SagaAnalytics
from participants.readside.stock import StockProjection
from participants.readside.summaries import SagaSummaries, progress_history

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

    from contracts import InventoryRestocked

__all__ = ["PROJECTION_COLLECTIONS", "rebuild_projections"]

PROJECTION_COLLECTIONS = (
    "readside_sagas",
    "readside_stock_sagas",
    "readside_restocks",
    "readside_analytics",
)
Progress = Callable[[int, int], None]


async def rebuild_projections(
    database: AsyncDatabase[dict[str, Any]], *, progress: Progress | None = None
) -> int:
    """Empty the projections and replay every saga into them; returns the saga count.
    Safe while the read side runs: every write is guarded by version or id."""
    from contracts import InventoryRestocked  # noqa: PLC0415 - avoids a cycle at import

    for name in PROJECTION_COLLECTIONS:
        await database[name].delete_many({})
    summaries = SagaSummaries(database=database)
    stock = StockProjection(database=database)
    analytics = SagaAnalytics(database=database)
    saga_ids = sorted(
        {d["saga_id"] async for d in database["saga_commits"].find({}, {"saga_id": 1})}
    )
    async for doc in database["inventory_stock"].find({}, {"restocks": 1}):
        for restock_id, units in (doc.get("restocks") or {}).items():
            event: InventoryRestocked = InventoryRestocked(
                sku=doc["_id"], units=units, restock_id=restock_id
            )
            await stock.apply_restock(event)
    for done, saga_id in enumerate(saga_ids, start=1):
        await summaries.rebuild_saga(saga_id)
        for progressed in await progress_history(summaries.events, saga_id):
            await stock.apply_saga(saga_id, progressed)
            await analytics.apply(saga_id, progressed)
        if progress is not None:
            progress(done, len(saga_ids))
    return len(saga_ids)
