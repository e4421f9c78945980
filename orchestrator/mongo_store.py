"""The saga store on MongoDB: one document per commit, no multi-document transactions.

``_id`` is ``<saga_id>:<version>`` so a version can only be taken once; a unique index on
(saga_id, causation_id) makes a redelivered message's commit fail instead of applying
twice. One insert is therefore atomic, versioned and idempotent, and runs on a standalone
server as well as on a replica set.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError, PyMongoError

from orchestrator.errors import ConcurrencyConflict, DuplicateMessage, StoreUnavailable
from orchestrator.state import SagaEvent, SagaState, replay
from orchestrator.store import Commit, DueDeadline, OutboxEntry

if TYPE_CHECKING:
    from pymongo.asynchronous.collection import AsyncCollection
    from pymongo.asynchronous.database import AsyncDatabase

__all__ = ["MongoSagaStore"]

Doc = dict[str, Any]


class MongoSagaStore:
    """Saga commits in the ``saga_commits`` collection."""

    def __init__(self, *, database: AsyncDatabase[Doc], collection: str = "saga_commits") -> None:
        self.commits: AsyncCollection[Doc] = database[collection]

    async def ensure_indexes(self) -> None:
        """Create the indexes the store relies on. Idempotent."""
        try:
            await self.commits.create_index(
                [("saga_id", ASCENDING), ("version", ASCENDING)], unique=True, name="saga_version"
            )
            await self.commits.create_index(
                [("saga_id", ASCENDING), ("causation_id", ASCENDING)],
                unique=True,
                name="saga_causation",
            )
            await self.commits.create_index(
                [("dispatched", ASCENDING), ("created_at", ASCENDING)], name="outbox_pending"
            )
            await self.commits.create_index([("deadline", ASCENDING)], name="deadline")
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot create saga store indexes: {e}") from e

    async def load(self, saga_id: str) -> SagaState:
        """Replay the saga's commits in version order."""
        try:
            docs = (
                await self.commits.find({"saga_id": saga_id})
                .sort("version", ASCENDING)
                .to_list(None)
            )
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot load saga {saga_id}: {e}") from e
        return replay(
            saga_id,
            (
                (d["version"], d.get("causation_id"), [SagaEvent.from_doc(e) for e in d["events"]])
                for d in docs
            ),
        )

    async def history(self, saga_id: str) -> list[Commit]:
        """Every commit of a saga, oldest first (for timelines and tests)."""
        try:
            docs = (
                await self.commits.find({"saga_id": saga_id})
                .sort("version", ASCENDING)
                .to_list(None)
            )
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot load saga {saga_id}: {e}") from e
        return [_from_doc(d) for d in docs]

    async def append(self, commit: Commit) -> None:
        """Insert the commit; a taken version or a processed message is refused."""
        try:
            await self.commits.insert_one(_to_doc(commit))
        except DuplicateKeyError as e:
            if await self._processed(commit.saga_id, commit.causation_id):
                raise DuplicateMessage(
                    f"message {commit.causation_id} already processed for saga {commit.saga_id}"
                ) from e
            raise ConcurrencyConflict(
                f"saga {commit.saga_id} version {commit.version} is taken"
            ) from e
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot append to saga {commit.saga_id}: {e}") from e

    async def _processed(self, saga_id: str, causation_id: str) -> bool:
        try:
            found = await self.commits.find_one(
                {"saga_id": saga_id, "causation_id": causation_id}, {"_id": 1}
            )
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot read saga {saga_id}: {e}") from e
        return found is not None

    async def mark_dispatched(self, commit_ids: Sequence[str]) -> None:
        """Flag published outboxes, many at a time."""
        await self._set_many(commit_ids, {"dispatched": True}, "mark outboxes dispatched")

    async def undispatched(self, *, older_than: datetime, limit: int) -> list[Commit]:
        """Oldest commits whose outbox is not known to be published."""
        try:
            docs = (
                await self.commits.find({"dispatched": False, "created_at": {"$lt": older_than}})
                .sort("created_at", ASCENDING)
                .limit(limit)
                .to_list(None)
            )
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot read the outbox: {e}") from e
        return [_from_doc(d) for d in docs]

    async def due_deadlines(self, *, now: datetime, limit: int) -> list[DueDeadline]:
        """Deadlines that have passed, oldest first, each marked live or stale.

        A commit's deadline is live only while the commit is its saga's latest; stale ones
        are for :meth:`clear_deadlines`. Two queries per batch, whatever its size.
        """
        try:
            docs = (
                await self.commits.find(
                    {"deadline": {"$lte": now}},
                    {"saga_id": 1, "version": 1, "deadline": 1},
                )
                .sort("deadline", ASCENDING)
                .limit(limit)
                .to_list(None)
            )
            if not docs:
                return []
            latest: dict[str, int] = {}
            cursor = self.commits.find(
                {"saga_id": {"$in": list({d["saga_id"] for d in docs})}},
                {"saga_id": 1, "version": 1},
            )
            async for doc in cursor:
                latest[doc["saga_id"]] = max(latest.get(doc["saga_id"], 0), doc["version"])
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot read deadlines: {e}") from e
        return [
            DueDeadline(
                commit_id=d["_id"],
                saga_id=d["saga_id"],
                version=d["version"],
                deadline=d["deadline"],
                live=latest.get(d["saga_id"]) == d["version"],
            )
            for d in docs
        ]

    async def clear_deadlines(self, commit_ids: Sequence[str]) -> None:
        """Forget deadlines that no longer apply (their saga moved on)."""
        await self._set_many(commit_ids, {"deadline": None}, "clear deadlines")

    async def _set_many(self, commit_ids: Sequence[str], fields: Doc, what: str) -> None:
        """One ``update_many`` for a batch of commits."""
        if not commit_ids:
            return
        try:
            await self.commits.update_many({"_id": {"$in": list(commit_ids)}}, {"$set": fields})
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot {what} ({len(commit_ids)} commits): {e}") from e


def _to_doc(commit: Commit) -> Doc:
    return {
        "_id": commit.id,
        "saga_id": commit.saga_id,
        "version": commit.version,
        "causation_id": commit.causation_id,
        "events": [e.to_doc() for e in commit.events],
        "outbox": [o.to_doc() for o in commit.outbox],
        "dispatched": not commit.outbox,
        "created_at": commit.created_at,
        "deadline": commit.deadline,
        "status": commit.status,
        "meta": commit.meta,
    }


def _from_doc(doc: Doc) -> Commit:
    return Commit(
        saga_id=doc["saga_id"],
        version=doc["version"],
        causation_id=doc["causation_id"],
        events=tuple(SagaEvent.from_doc(e) for e in doc["events"]),
        outbox=tuple(OutboxEntry.from_doc(o) for o in doc.get("outbox", [])),
        created_at=doc["created_at"],
        deadline=doc.get("deadline"),
        status=doc.get("status"),
        meta=doc.get("meta") or {},
    )
