"""The saga-summary projection: one document per saga, for lists, filters and the
stuck-saga report.

A summary is a fold over the saga's ``saga.progressed`` events in version order. The
consumer applies an event only on top of the version before it (a conditional write);
a duplicate is skipped, and a gap (an event overtook another through a retry) makes it
rebuild that saga's summary from the event store. The projection therefore always
equals the fold over the event store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pymongo import ASCENDING, DESCENDING
from pymongo.errors import DuplicateKeyError, PyMongoError

from contracts import SagaProgressed
from orchestrator.errors import StoreUnavailable, TransientError
from orchestrator.mongo_store import MongoSagaStore
from orchestrator.runtime import progress_event
from orchestrator.state import SagaState, apply_commit

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

__all__ = ["SagaSummaries", "fold", "progress_history"]

Doc = dict[str, Any]
TERMINAL = ("completed", "failed", "compensated")
ERROR_EVENTS = ("step_failed", "step_timed_out", "saga_parked")


def fold(summary: Doc | None, saga_id: str, event: SagaProgressed) -> Doc:
    """The summary after one more progress event (pure)."""
    doc: Doc = (
        dict(summary)
        if summary
        else {
            "_id": saga_id,
            "compensations": 0,
            "resends": 0,
            "events": 0,
            "last_error": None,
            "failed_step": None,
        }
    )
    doc.update(
        saga_name=event.saga_name,
        version=event.version,
        status=event.status,
        step=event.step,
        reference=event.reference,
        started_at=event.started_at,
        deadline=event.deadline,
        updated_at=max(e.at for e in event.events),
    )
    for e in event.events:
        doc["events"] += 1
        if e.step == event.step:
            doc["attempt"] = e.attempt
        if e.type == "step_compensated":
            doc["compensations"] += 1
        elif e.type == "command_resent":
            doc["resends"] += 1
        if e.type in ERROR_EVENTS and e.reason:
            doc["last_error"] = e.reason
            if e.type != "saga_parked":
                doc["failed_step"] = e.step
    doc["waiting_since"] = doc["updated_at"] if event.status not in TERMINAL else None
    return doc


async def progress_history(store: MongoSagaStore, saga_id: str) -> list[SagaProgressed]:
    """The progress events the orchestrator published (or would have) for a saga."""
    state = SagaState(saga_id=saga_id)
    events: list[SagaProgressed] = []
    for commit in await store.history(saga_id):
        state = apply_commit(state, commit.version, commit.causation_id, commit.events)
        message = progress_event(state, commit.events).message
        assert isinstance(message, SagaProgressed)
        events.append(message)
    return events


class SagaSummaries:
    """``readside_sagas``: one summary per saga."""

    def __init__(self, *, database: AsyncDatabase[Doc]) -> None:
        self.docs = database["readside_sagas"]
        self.events = MongoSagaStore(database=database)

    async def ensure_indexes(self) -> None:
        """Indexes for the list filters."""
        await self.docs.create_index([("status", ASCENDING), ("updated_at", ASCENDING)])
        await self.docs.create_index([("updated_at", DESCENDING)])

    async def apply(self, saga_id: str, event: SagaProgressed) -> str:
        """Apply one event: 'applied', 'duplicate' or 'rebuilt' (after a gap)."""
        try:
            current = await self.docs.find_one({"_id": saga_id})
            version = current["version"] if current else 0
            if event.version <= version:
                return "duplicate"
            if event.version > version + 1:
                await self.rebuild_saga(saga_id)
                return "rebuilt"
            await self._store(saga_id, fold(current, saga_id, event), version)
        except DuplicateKeyError:
            raise TransientError(f"summary of {saga_id} created concurrently; retry") from None
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot update saga summary: {e}") from e
        return "applied"

    async def rebuild_saga(self, saga_id: str) -> Doc | None:
        """Recompute one summary from the event store and store it (unless a newer one
        is already there)."""
        summary: Doc | None = None
        for event in await progress_history(self.events, saga_id):
            summary = fold(summary, saga_id, event)
        if summary is None:
            return None
        try:
            current = await self.docs.find_one({"_id": saga_id}, {"version": 1})
            version = current["version"] if current else 0
            if version < summary["version"]:
                await self._store(saga_id, summary, version)
        except DuplicateKeyError:
            raise TransientError(f"summary of {saga_id} created concurrently; retry") from None
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot store saga summary: {e}") from e
        return summary

    async def _store(self, saga_id: str, summary: Doc, expected_version: int) -> None:
        """Insert, or replace the version we read; a concurrent writer makes it retry.
        (Whole-document writes: they keep dates as dates on every server.)"""
        if expected_version == 0:
            await self.docs.insert_one(summary)
            return
        result = await self.docs.replace_one({"_id": saga_id, "version": expected_version}, summary)
        if result.matched_count == 0:
            raise TransientError(f"summary of {saga_id} changed concurrently; retry")

    async def get(self, saga_id: str) -> Doc | None:
        """One summary."""
        return await self.docs.find_one({"_id": saga_id})

    async def find(
        self,
        *,
        status: Iterable[str] = (),
        step: str | None = None,
        older_than: timedelta | None = None,
        now: datetime | None = None,
        limit: int = 100,
    ) -> list[Doc]:
        """Summaries, newest first, filtered by status, current step and age."""
        query: Doc = {}
        statuses = list(status)
        if statuses:
            query["status"] = {"$in": statuses}
        if step:
            query["step"] = step
        if older_than is not None and now is not None:
            query["started_at"] = {"$lte": now - older_than}
        cursor = self.docs.find(query).sort("updated_at", DESCENDING).limit(limit)
        return await cursor.to_list(None)

    async def unsettled(self) -> AsyncIterator[Doc]:
        """Summaries of sagas that are not terminal (running, compensating, parked)."""
        async for doc in self.docs.find({"status": {"$nin": list(TERMINAL)}}):
            yield doc
