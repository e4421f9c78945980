"""Retention of the saga store: finished sagas removed in batches, a tombstone kept.

A commit that leaves its saga completed, failed or compensated carries ``finished_at``
(sparse index). A saga is prunable when such a commit is its latest (no version after
it) and none of its commits has pending or parked work: parked sagas
(``compensation_failed``) and sagas in flight never have ``finished_at`` on their latest
commit, so they are never candidates. A page costs three small queries plus the live
sets, whatever the history; removal is one delete by ``_id`` per page.

A tombstone per pruned saga (``saga_tombstones``) lets readers say "pruned" rather than
"unknown". It is written before the commits are deleted, so a crash in between leaves
a tombstone beside a history that the next run removes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from pymongo import ASCENDING
from pymongo.errors import BulkWriteError, PyMongoError

from orchestrator.errors import StoreUnavailable
from orchestrator.saga.commits import FinishedSaga, PrunablePage
from orchestrator.store.shape import (
    DEADLINE_AT,
    FINISHED_AT,
    OUTBOX_AT,
    PARKED_AT,
    Doc,
    from_ms,
    to_ms,
)

if TYPE_CHECKING:
    from pymongo.asynchronous.collection import AsyncCollection

__all__ = ["MongoRetention"]

DUPLICATE_KEY = 11000
CANDIDATE_FIELDS = {"saga_id": 1, "saga_name": 1, "version": 1, "status": 1, FINISHED_AT: 1}


def _cursor(text: str | None) -> tuple[int, str] | None:
    if not text:
        return None
    ms, _, commit_id = text.partition("/")
    return int(ms), commit_id


class MongoRetention:
    """The retention port over ``saga_commits`` and ``saga_tombstones``."""

    commits: AsyncCollection[Doc]
    tombstones: AsyncCollection[Doc]

    async def prunable(
        self, *, finished_before: datetime, limit: int, cursor: str | None = None
    ) -> PrunablePage:
        """Finished sagas with nothing pending, oldest first, from ``cursor`` on."""
        try:
            candidates = await self._candidates(to_ms(finished_before), limit, _cursor(cursor))
            if not candidates:
                return PrunablePage(sagas=(), cursor=None)
            successors = [f"{d['saga_id']}:{d['version'] + 1}" for d in candidates]
            moved_on = {
                d["saga_id"]
                async for d in self.commits.find({"_id": {"$in": successors}}, {"saga_id": 1})
            }
            busy = await self._busy_sagas()
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot read finished sagas: {e}") from e
        last = candidates[-1]
        found = tuple(
            FinishedSaga(
                saga_id=d["saga_id"],
                saga_name=d.get("saga_name") or "",
                version=d["version"],
                status=str(d.get("status")),
                finished_at=from_ms(d[FINISHED_AT]),
            )
            for d in candidates
            if d["saga_id"] not in moved_on and d["saga_id"] not in busy
        )
        more = len(candidates) == limit
        return PrunablePage(
            sagas=found,
            cursor=f"{last[FINISHED_AT]}/{last['_id']}" if more else None,
            scanned=len(candidates),
        )

    async def _candidates(
        self, cutoff: int, limit: int, after: tuple[int, str] | None
    ) -> list[Doc]:
        """Commits that finished a saga before ``cutoff``, in (time, id) order after
        ``after``: the rest of its millisecond first, then later ones."""
        docs: list[Doc] = []
        if after is not None:
            ms, commit_id = after
            docs = await (
                self.commits.find({FINISHED_AT: ms, "_id": {"$gt": commit_id}}, CANDIDATE_FIELDS)
                .sort("_id", ASCENDING)
                .limit(limit)
                .to_list()
            )
        if len(docs) < limit:
            later = {"$gt": after[0], "$lt": cutoff} if after else {"$lt": cutoff}
            docs += await (
                self.commits.find({FINISHED_AT: later}, CANDIDATE_FIELDS)
                .sort([(FINISHED_AT, ASCENDING), ("_id", ASCENDING)])
                .limit(limit - len(docs))
                .to_list()
            )
        return docs

    async def _busy_sagas(self) -> set[str]:
        """Sagas with pending or parked work (the live sets, small by construction)."""
        busy: set[str] = set()
        for name in (OUTBOX_AT, DEADLINE_AT):
            async for doc in self.commits.find({name: {"$gte": 0}}, {"saga_id": 1}):
                busy.add(doc["saga_id"])
        # ``parked_at`` outlives a parked deadline that ``clear_deadlines`` forgot (the
        # saga moved past it) until ``parked()`` tidies up: only a reason means parked.
        reasons = {"saga_id": 1, "outbox_parked": 1, "deadline_parked": 1}
        async for doc in self.commits.find({PARKED_AT: {"$gte": 0}}, reasons):
            if doc.get("outbox_parked") or doc.get("deadline_parked"):
                busy.add(doc["saga_id"])
        return busy

    async def count_finished(self, *, finished_before: datetime) -> int:
        """Commits that finished a saga before the time (counted from the index)."""
        query = {FINISHED_AT: {"$lt": to_ms(finished_before)}}
        try:
            return len(await self.commits.find(query, {"_id": 1}).to_list())
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot count finished sagas: {e}") from e

    async def prune(self, sagas: Sequence[FinishedSaga], *, now: datetime) -> int:
        """Tombstones first, then the commits (by ``_id``, up to the version found)."""
        if not sagas:
            return 0
        tombstones = [
            {
                "_id": s.saga_id,
                "saga_name": s.saga_name,
                "status": s.status,
                "version": s.version,
                "finished_at": s.finished_at,
                "pruned_at": now,
            }
            for s in sagas
        ]
        ids = [f"{s.saga_id}:{v}" for s in sagas for v in range(1, s.version + 1)]
        try:
            try:
                await self.tombstones.insert_many(tombstones, ordered=False)
            except BulkWriteError as e:
                # A tombstone already there is a run that crashed half-way; anything
                # else keeps the commits.
                if any(w.get("code") != DUPLICATE_KEY for w in e.details.get("writeErrors", [])):
                    raise
            result = await self.commits.delete_many({"_id": {"$in": ids}})
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot prune {len(sagas)} sagas: {e}") from e
        return result.deleted_count

    async def pruned(self, saga_id: str) -> bool:
        """Whether retention removed this saga."""
        try:
            return await self.tombstones.find_one({"_id": saga_id}, {"_id": 1}) is not None
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot read tombstones: {e}") from e

    async def has_pruned(self) -> bool:
        """Whether retention ever removed a saga from this store."""
        try:
            return await self.tombstones.find_one({}, {"_id": 1}) is not None
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot read tombstones: {e}") from e
