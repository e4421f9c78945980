"""The saga store on MongoDB: one document per commit, no multi-document transactions.

``_id`` is ``<saga_id>:<version>`` so a version can only be taken once; a unique index on
(saga_id, causation_id) makes a redelivered message's commit fail instead of applying
twice. One insert is therefore atomic, versioned and idempotent, and runs on a standalone
server as well as on a replica set. :meth:`MongoSagaStore.append_many` stores the commits
of many handlers in one ``insert_many(ordered=False)``: each document still succeeds or
fails on its own (group commit, see ``orchestrator.runtime.batcher``).

The pending work (outbox, deadline) lives in fields of the commit that exist only while
it is pending (:mod:`orchestrator.store.shape`), so the pollers' queries and indexes
follow the work in flight, never the history (:mod:`orchestrator.store.work`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

import bson
from bson.errors import InvalidDocument
from pymongo import ASCENDING
from pymongo.errors import BulkWriteError, PyMongoError

from contracts import MalformedMessage
from orchestrator.errors import ConcurrencyConflict, DuplicateMessage, StoreUnavailable
from orchestrator.saga.state import SagaEvent, SagaState, replay
from orchestrator.store.legacy import migrate_legacy
from orchestrator.store.retention import MongoRetention
from orchestrator.store.shape import (
    DEADLINE_AT,
    FINISHED_AT,
    OUTBOX_AT,
    PARKED_AT,
    Doc,
    commit_from_doc,
    commit_to_doc,
)
from orchestrator.store.versions import MongoVersions
from orchestrator.store.work import MongoWork

if TYPE_CHECKING:
    from pymongo.asynchronous.collection import AsyncCollection
    from pymongo.asynchronous.database import AsyncDatabase

    from orchestrator.saga.commits import Commit

__all__ = ["MongoSagaStore"]

DUPLICATE_KEY = 11000


class MongoSagaStore(MongoWork, MongoRetention, MongoVersions):
    """Saga commits in the ``saga_commits`` collection (tombstones of pruned sagas in
    ``saga_tombstones``). Implements every store port of :mod:`orchestrator.ports`."""

    def __init__(self, *, database: AsyncDatabase[Doc], collection: str = "saga_commits") -> None:
        self.commits: AsyncCollection[Doc] = database[collection]
        self.tombstones: AsyncCollection[Doc] = database["saga_tombstones"]
        self.meta: AsyncCollection[Doc] = database[f"{collection}_meta"]

    async def ensure_indexes(self) -> None:
        """Create the indexes the store relies on, and convert commits of the previous
        shape (once). Idempotent."""
        sparse = (OUTBOX_AT, DEADLINE_AT, PARKED_AT, FINISHED_AT)
        try:
            await self.commits.create_index(
                [("saga_id", ASCENDING), ("version", ASCENDING)], unique=True, name="saga_version"
            )
            await self.commits.create_index(
                [("saga_id", ASCENDING), ("causation_id", ASCENDING)],
                unique=True,
                name="saga_causation",
            )
            # MongoDB answers saga_id lookups from the compound indexes above; the
            # embedded server only from a single-field index.
            await self.commits.create_index([("saga_id", ASCENDING)], name="saga")
            for name in sparse:
                await self.commits.create_index([(name, ASCENDING)], sparse=True, name=name)
            for mark in ("starts", "ends"):  # sparse: only two commits per saga carry one
                await self.commits.create_index(
                    [(mark, ASCENDING), ("saga_name", ASCENDING), ("saga_version", ASCENDING)],
                    name=f"in_flight_{mark}",
                    sparse=True,
                )
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot create saga store indexes: {e}") from e
        await migrate_legacy(self.commits)

    async def load(self, saga_id: str) -> SagaState:
        """Replay the saga's commits in version order."""
        docs = await self._docs(saga_id)
        return replay(
            saga_id,
            (
                (d["version"], d.get("causation_id"), [SagaEvent.from_doc(e) for e in d["events"]])
                for d in docs
            ),
        )

    async def history(self, saga_id: str) -> list[Commit]:
        """Every commit of a saga, oldest first (for timelines and tests)."""
        return [commit_from_doc(d) for d in await self._docs(saga_id)]

    async def _docs(self, saga_id: str) -> list[Doc]:
        try:
            return (
                await self.commits.find({"saga_id": saga_id})
                .sort("version", ASCENDING)
                .to_list(None)
            )
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot load saga {saga_id}: {e}") from e

    async def append(self, commit: Commit) -> None:
        """Insert the commit; a taken version or a processed message is refused."""
        (outcome,) = await self.append_many([commit])
        if outcome is not None:
            raise outcome

    async def append_many(self, commits: Sequence[Commit]) -> list[Exception | None]:
        """Insert the commits in one round trip, each on its own: a duplicate or a taken
        version fails only its own commit. A commit BSON cannot encode (a number beyond
        64 bits) is refused as malformed input, and the others are inserted."""
        outcomes: list[Exception | None] = [None] * len(commits)
        docs = [(i, commit_to_doc(c)) for i, c in enumerate(commits)]
        try:
            await self._insert(commits, docs, outcomes)
        except (InvalidDocument, OverflowError):
            # Raised while encoding, before anything is sent: find the culprits.
            storable = []
            for i, doc in docs:
                refusal = _unstorable(commits[i], doc)
                if refusal is None:
                    storable.append((i, doc))
                outcomes[i] = refusal
            await self._insert(commits, storable, outcomes)
        return outcomes

    async def _insert(
        self,
        commits: Sequence[Commit],
        docs: list[tuple[int, Doc]],
        outcomes: list[Exception | None],
    ) -> None:
        if not docs:
            return
        try:
            await self.commits.insert_many([d for _, d in docs], ordered=False)
        except BulkWriteError as e:
            await self._bulk_errors(e, commits, docs, outcomes)
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot append {len(docs)} commits: {e}") from e

    async def _bulk_errors(
        self,
        error: BulkWriteError,
        commits: Sequence[Commit],
        docs: list[tuple[int, Doc]],
        outcomes: list[Exception | None],
    ) -> None:
        """Each failed document's own error: a duplicate message, a taken version, or
        a store failure of that document alone."""
        duplicates: list[int] = []
        for write_error in error.details.get("writeErrors", []):
            i = docs[int(write_error["index"])][0]
            if write_error.get("code") == DUPLICATE_KEY:
                duplicates.append(i)
            else:
                outcomes[i] = StoreUnavailable(
                    f"cannot append to saga {commits[i].saga_id}: {write_error.get('errmsg')}"
                )
        processed = await asyncio.gather(
            *(self._processed(commits[i].saga_id, commits[i].causation_id) for i in duplicates)
        )
        for i, was_processed in zip(duplicates, processed, strict=True):
            commit = commits[i]
            outcomes[i] = (
                DuplicateMessage(
                    f"message {commit.causation_id} already processed for saga {commit.saga_id}"
                )
                if was_processed
                else ConcurrencyConflict(f"saga {commit.saga_id} version {commit.version} is taken")
            )

    async def _processed(self, saga_id: str, causation_id: str) -> bool:
        try:
            found = await self.commits.find_one(
                {"saga_id": saga_id, "causation_id": causation_id}, {"_id": 1}
            )
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot read saga {saga_id}: {e}") from e
        return found is not None


def _unstorable(commit: Commit, doc: Doc) -> MalformedMessage | None:
    """Why BSON cannot encode the document, or None if it can."""
    try:
        bson.encode(doc)
    except (InvalidDocument, OverflowError) as e:
        return MalformedMessage("schema_violation", f"saga {commit.saga_id} cannot be stored: {e}")
    return None
