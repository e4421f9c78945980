"""History retention: finished sagas removed in batches, with what the read side keeps
about them, each leaving a tombstone so its id answers "pruned", not "unknown".

Used by ``saga history prune`` (with a progress bar) and by the orchestrator when
``SAGA_RETENTION_DAYS`` is set. Only sagas that are completed, failed or compensated,
finished before the cut-off and have nothing pending or parked are removed; parked
sagas and sagas in flight never are. Per page: the read side's rows first (hooks), then
the tombstones and the commits, so a crash half-way is finished by the next run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pymongo.errors import PyMongoError

from orchestrator.errors import StoreUnavailable

if TYPE_CHECKING:
    from datetime import datetime, timedelta

    from pymongo.asynchronous.database import AsyncDatabase

    from orchestrator.packs import SagaPack
    from orchestrator.ports import HistoryRetention

__all__ = [
    "GENERIC_SAGA_KEYED",
    "PruneHook",
    "PruneReport",
    "delete_by_saga_id",
    "prune_history",
    "saga_keyed_collections",
]

GENERIC_SAGA_KEYED = ("readside_sagas", "readside_analytics")
"""The generic read side's collections whose ``_id`` is the saga id."""
PruneHook = Callable[[Sequence[str]], Awaitable[None]]
"""Removes what a component keeps about these sagas (called before their commits go)."""
Progress = Callable[[int, int], None]


def saga_keyed_collections(packs: Iterable[SagaPack] = ()) -> tuple[str, ...]:
    """The generic read side's saga-keyed collections, and those each pack names in an
    optional ``pruned_with_saga`` attribute (collections whose ``_id`` is the saga id)."""
    extra = [c for p in packs for c in getattr(p, "pruned_with_saga", ()) or ()]
    return tuple(dict.fromkeys((*GENERIC_SAGA_KEYED, *extra)))


def delete_by_saga_id(
    database: AsyncDatabase[dict[str, Any]], collections: Sequence[str]
) -> PruneHook:
    """A hook deleting the documents with these saga ids as ``_id`` from each collection."""

    async def delete(saga_ids: Sequence[str]) -> None:
        try:
            for name in collections:
                await database[name].delete_many({"_id": {"$in": list(saga_ids)}})
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot prune the read side: {e}") from e

    return delete


@dataclass(frozen=True, kw_only=True)
class PruneReport:
    """What a prune removed (or, with ``dry_run``, would remove)."""

    sagas: int
    commits: int
    scanned: int
    dry_run: bool


async def prune_history(
    store: HistoryRetention,
    database: AsyncDatabase[dict[str, Any]] | None,
    *,
    older_than: timedelta,
    now: datetime,
    batch: int = 500,
    dry_run: bool = False,
    collections: Sequence[str] = GENERIC_SAGA_KEYED,
    hooks: Sequence[PruneHook] = (),
    progress: Progress | None = None,
) -> PruneReport:
    """Remove the sagas that finished more than ``older_than`` before ``now``, ``batch``
    at a time; ``progress(scanned, total)`` after each page (total: finished commits
    before the cut-off, an upper bound)."""
    cutoff = now - older_than
    every = [*hooks, *([delete_by_saga_id(database, collections)] if database is not None else [])]
    total = await store.count_finished(finished_before=cutoff) if progress else 0
    sagas = commits = scanned = 0
    cursor: str | None = None
    while True:
        page = await store.prunable(finished_before=cutoff, limit=batch, cursor=cursor)
        ids = [s.saga_id for s in page.sagas]
        if ids and not dry_run:
            for hook in every:
                await hook(ids)
            commits += await store.prune(page.sagas, now=now)
        sagas += len(ids)
        scanned += page.scanned
        if progress is not None:
            progress(scanned, max(total, scanned))
        if page.cursor is None:
            return PruneReport(sagas=sagas, commits=commits, scanned=scanned, dry_run=dry_run)
        cursor = page.cursor
