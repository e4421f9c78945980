"""Rebuild every projection from the event store (and what packs keep beside it)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from orchestrator.readside.analytics import SagaAnalytics
from orchestrator.readside.summaries import SagaSummaries, progress_history

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

    from orchestrator.readside.extension import ReadSideExtension

__all__ = ["PROJECTION_COLLECTIONS", "rebuild_projections"]

PROJECTION_COLLECTIONS = (
    "readside_sagas",
    "readside_counters",
    "readside_analytics",
    "readside_metrics",
)
"""The generic projections and their totals; packs add their own collections."""
Progress = Callable[[int, int], None]


async def rebuild_projections(
    database: AsyncDatabase[dict[str, Any]],
    *,
    extensions: Mapping[str, ReadSideExtension] | None = None,
    progress: Progress | None = None,
) -> int:
    """Empty the projections and replay every saga into them; returns the saga count.

    Stop the read side first (every ``saga-readside``): the collections are emptied one
    after another, so an event the read side applies in between can be counted twice
    (a shipment applied on a saga row that is still there, into totals already emptied,
    and again by the replay). The orchestrator and the participants may keep running:
    the read side catches up from its queues afterwards, and every write is guarded by
    version or id, so what it applies again is a duplicate."""
    extensions = extensions or {}
    collections = [
        *PROJECTION_COLLECTIONS,
        *(c for e in extensions.values() for c in e.collections),
    ]
    for name in collections:
        await database[name].delete_many({})
    summaries = SagaSummaries(database=database)
    analytics = SagaAnalytics(database=database)
    saga_ids = sorted(
        {d["saga_id"] async for d in database["saga_commits"].find({}, {"saga_id": 1})}
    )
    for extension in extensions.values():
        await extension.rebuild_begin()
    for done, saga_id in enumerate(saga_ids, start=1):
        await summaries.rebuild_saga(saga_id)
        events = await progress_history(summaries.events, saga_id)
        for progressed in events:
            await analytics.apply(saga_id, progressed)
        for extension in extensions.values():
            await extension.rebuild_saga(saga_id, events)
        if progress is not None:
            progress(done, len(saga_ids))
    return len(saga_ids)
