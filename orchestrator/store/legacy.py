"""Commits of the previous shape, converted once when a new store version starts.

Before the live-work fields (:mod:`orchestrator.store.shape`), every commit carried
``dispatched`` (false until its outbox was confirmed) and ``deadline`` (the saga's
deadline after it, a datetime, cleared when stale), with plain indexes ``outbox_pending``
and ``deadline`` over every commit ever written. Such a database is recognised by those
indexes (by their keys). Its pending commits get ``outbox_at`` (and their saga's name, which old
commits lacked), its armed deadlines ``deadline_at``, its finished sagas' last commits
``finished_at``; then the two old indexes are dropped, so later starts skip all this.

Each conversion is one conditional update per document (in batches), so instances that
start together convert each document once and a crash half-way is resumed by the next
start. Stop the instances of the previous version before starting this one: one still
running would keep writing commits of the old shape, which only a later start converts.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from pymongo import UpdateOne
from pymongo.errors import PyMongoError

from orchestrator.errors import StoreUnavailable
from orchestrator.store.shape import DEADLINE_AT, FINISHED_AT, OUTBOX_AT, TERMINAL, Doc, to_ms

if TYPE_CHECKING:
    from pymongo.asynchronous.collection import AsyncCollection

__all__ = ["LEGACY_INDEXES", "migrate_legacy"]

log = structlog.get_logger("store")

LEGACY_INDEXES = ((("dispatched", 1), ("created_at", 1)), (("deadline", 1),))
"""The key patterns of the old shape's indexes (named ``outbox_pending`` and
``deadline``; matched by key, since not every server keeps the names it was given)."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BATCH = 500


async def migrate_legacy(commits: AsyncCollection[Doc]) -> int:
    """Convert the pending work of old-shape commits, if this database has any; returns
    how many documents changed."""
    try:
        indexes = await commits.index_information()
    except PyMongoError as e:
        raise StoreUnavailable(f"cannot read the saga store's indexes: {e}") from e
    old = [
        name
        for name, spec in indexes.items()
        if tuple((k, int(v)) for k, v in spec.get("key", ())) in LEGACY_INDEXES
    ]
    if not old:
        return 0
    try:
        changed = await _outboxes(commits) + await _deadlines(commits) + await _finished(commits)
        for name in old:
            await commits.drop_index(name)
    except PyMongoError as e:
        raise StoreUnavailable(f"cannot convert commits of the previous shape: {e}") from e
    log.info("legacy_commits_converted", changed=changed, dropped_indexes=old)
    return changed


async def _outboxes(commits: AsyncCollection[Doc]) -> int:
    ops = []
    names: dict[str, str] = {}
    async for doc in commits.find({"dispatched": False}, {"events": 0, "outbox": 0}):
        name = doc.get("saga_name") or await _saga_name(commits, doc["saga_id"], names)
        ops.append(
            UpdateOne(
                {"_id": doc["_id"], "dispatched": False},
                {
                    "$set": {OUTBOX_AT: to_ms(doc["created_at"]), "saga_name": name},
                    "$unset": {"dispatched": ""},
                },
            )
        )
    return await _write(commits, ops)


async def _deadlines(commits: AsyncCollection[Doc]) -> int:
    ops = []
    names: dict[str, str] = {}
    async for doc in commits.find({"deadline": {"$gte": EPOCH}}, {"events": 0, "outbox": 0}):
        name = doc.get("saga_name") or await _saga_name(commits, doc["saga_id"], names)
        ops.append(
            UpdateOne(
                {"_id": doc["_id"]},
                {
                    "$set": {DEADLINE_AT: to_ms(doc["deadline"]), "saga_name": name},
                    "$unset": {"deadline": ""},
                },
            )
        )
    return await _write(commits, ops)


async def _finished(commits: AsyncCollection[Doc]) -> int:
    ops = [
        UpdateOne({"_id": doc["_id"]}, {"$set": {FINISHED_AT: to_ms(doc["created_at"])}})
        async for doc in commits.find(
            {"status": {"$in": list(TERMINAL)}, FINISHED_AT: {"$exists": False}},
            {"created_at": 1},
        )
    ]
    return await _write(commits, ops)


async def _saga_name(commits: AsyncCollection[Doc], saga_id: str, names: dict[str, str]) -> str:
    """Old commits lacked the saga's name: it is in the saga_started event of version 1."""
    if saga_id not in names:
        first: dict[str, Any] | None = await commits.find_one({"_id": f"{saga_id}:1"})
        names[saga_id] = ""
        for event in (first or {}).get("events", []):
            if event.get("type") == "saga_started":
                names[saga_id] = str((event.get("data") or {}).get("saga_name", ""))
    return names[saga_id]


async def _write(commits: AsyncCollection[Doc], ops: list[UpdateOne]) -> int:
    changed = 0
    for start in range(0, len(ops), BATCH):
        result = await commits.bulk_write(ops[start : start + BATCH], ordered=False)
        changed += result.modified_count
    return changed
