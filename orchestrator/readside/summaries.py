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
from orchestrator.readside.counters import Counters, Movement
from orchestrator.readside.remembered import REMEMBERED, Remembered
from orchestrator.runtime.engine import progress_event
from orchestrator.runtime.locks import KeyedLocks
from orchestrator.saga.state import SagaState, apply_commit
from orchestrator.store.mongo import MongoSagaStore
from orchestrator.store.writes import DocumentWrites

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

__all__ = ["SagaSummaries", "fold", "in_flight_movement", "progress_history"]

Doc = dict[str, Any]
TERMINAL = ("completed", "failed", "compensated")
UNSETTLED = ("running", "compensating", "compensation_failed", "completing_stuck")
"""Statuses of sagas still running on their definition (parked ones included)."""
IN_FLIGHT = "in_flight"
ATTEMPTS = 20
"""Conditional writes lost to concurrent writers before a handler gives up (retried)."""
WAITING = ("running", "compensating")
"""Statuses in which a saga waits for a reply (and so has a deadline armed)."""
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
    previous_step = doc.get("step")
    doc.update(
        saga_name=event.saga_name,
        saga_version=event.saga_version,
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
    if event.step != previous_step or "step_since" not in doc:
        # when the current step began: a retriable step resent for minutes is one that
        # has been failing that long, though every resend updates the summary
        began = [e.at for e in event.events if e.type == "step_started" and e.step == event.step]
        doc["step_since"] = min(began) if began else doc["updated_at"]
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


def in_flight_movement(saga_id: str, version: int, old: str | None, new: str) -> Movement:
    """The change of the in-flight counts when a saga's status goes from old to new."""
    counts: dict[str, float] = {}
    if old in UNSETTLED and old != new:
        counts[old] = -1
    if new in UNSETTLED and old != new:
        counts[new] = 1
    return Movement(key=f"summary:{saga_id}:v{version}", increments={IN_FLIGHT: counts})


class SagaSummaries:
    """``readside_sagas``: one summary per saga; ``readside_counters``: how many sagas
    are in flight, by status (kept with every change of status, read by /metrics)."""

    def __init__(self, *, database: AsyncDatabase[Doc], remember: int = REMEMBERED) -> None:
        self.docs = database["readside_sagas"]
        self.in_flight = Counters(counters=database["readside_counters"], guards=self.docs)
        self._locks = KeyedLocks()
        self.events = MongoSagaStore(database=database)
        self.known = Remembered(remember)
        """The summaries this process stored last, of sagas not ended."""
        self.first_writes = DocumentWrites(self.docs)
        """A saga's first summary (an insert): group-committed."""

    async def ensure_indexes(self) -> None:
        """Indexes for the list filters."""
        await self.docs.create_index([("status", ASCENDING), ("updated_at", ASCENDING)])
        await self.docs.create_index(
            [("status", ASCENDING), ("deadline", ASCENDING), ("updated_at", ASCENDING)]
        )
        await self.docs.create_index([("updated_at", DESCENDING)])

    async def apply(self, saga_id: str, event: SagaProgressed) -> str:
        """Apply one event: 'applied', 'duplicate' or 'rebuilt' (after a gap)."""
        async with self._locks(saga_id):
            return await self._apply(saga_id, event)

    async def _apply(self, saga_id: str, event: SagaProgressed) -> str:
        # What this process stored last, instead of reading it (orchestrator.readside.
        # remembered): a copy behind the store only costs a failed conditional write.
        known = self.known.take(saga_id)
        current: Doc | None
        try:
            for _ in range(ATTEMPTS):
                if known is not None:
                    current, remembered, known = known, True, None
                else:
                    current, remembered = await self.docs.find_one({"_id": saga_id}), False
                if current is not None and current.get("pending"):
                    await self.in_flight.settle(current)
                    continue
                version = current["version"] if current else 0
                if event.version <= version:  # the store holds this version or a newer one
                    if remembered and current is not None:
                        self._remember(current)
                    return "duplicate"
                if event.version > version + 1:
                    if remembered:
                        continue  # the store may be ahead of what we remember: read it
                    await self.rebuild_saga(saga_id)
                    return "rebuilt"
                if await self._store(saga_id, fold(current, saga_id, event), current):
                    return "applied"
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot update saga summary: {e}") from e
        raise TransientError(f"summary of {saga_id} keeps changing under us; retry")

    def _remember(self, summary: Doc) -> None:
        """Keep the summary just stored (or found current) for the saga's next event,
        unless the saga ended (few events come after that)."""
        if summary.get("status") in TERMINAL:
            self.known.forget(summary["_id"])
        else:
            self.known.keep(summary)

    async def rebuild_saga(self, saga_id: str) -> Doc | None:
        """Recompute one summary from the event store and store it (unless a newer one
        is already there)."""
        summary: Doc | None = None
        for event in await progress_history(self.events, saga_id):
            summary = fold(summary, saga_id, event)
        if summary is None:
            return None
        try:
            for _ in range(ATTEMPTS):
                current = await self.docs.find_one({"_id": saga_id})
                if current is not None and current.get("pending"):
                    await self.in_flight.settle(current)
                    continue
                if current is not None and current["version"] >= summary["version"]:
                    return summary
                if await self._store(saga_id, dict(summary), current):
                    return summary
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot store saga summary: {e}") from e
        raise TransientError(f"summary of {saga_id} keeps changing under us; retry")

    async def _store(self, saga_id: str, summary: Doc, current: Doc | None) -> bool:
        """Insert, or replace the version we read (whole-document writes: they keep dates
        as dates on every server); False if a concurrent writer got there first. A change
        of status moves the in-flight counts with it."""
        movement = in_flight_movement(
            saga_id, summary["version"], current["status"] if current else None, summary["status"]
        )
        if not movement.empty:
            summary["pending"] = self.in_flight.pending(movement)
        try:
            if current is None:
                try:
                    await self.first_writes.insert(summary)
                except DuplicateKeyError:
                    return False
            else:
                query = {
                    "_id": saga_id,
                    "version": current["version"],
                    "pending": {"$exists": False},
                }
                if (await self.docs.replace_one(query, summary)).matched_count == 0:
                    return False
        except BaseException:  # the write may be stored all the same: give its lease up
            if "pending" in summary:
                await self.in_flight.give_up(saga_id, summary["pending"])
            raise
        if "pending" in summary:
            await self.in_flight.finish(saga_id, summary["pending"])
        self._remember(summary)
        return True

    async def in_flight_counts(self) -> dict[str, int]:
        """Sagas not ended, by status (one document)."""
        found = await self.in_flight.read([IN_FLIGHT])
        doc = found.get(IN_FLIGHT, {})
        return {status: int(doc.get(status, 0)) for status in UNSETTLED}

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
        saga_name: str | None = None,
        saga_version: int | None = None,
    ) -> list[Doc]:
        """Summaries, newest first, filtered by status, current step, age, saga name
        and definition version."""
        query: Doc = {}
        statuses = list(status)
        if statuses:
            query["status"] = {"$in": statuses}
        if step:
            query["step"] = step
        if saga_name:
            query["saga_name"] = saga_name
        if saga_version is not None:
            query["saga_version"] = saga_version
        if older_than is not None and now is not None:
            query["started_at"] = {"$lte": now - older_than}
        cursor = self.docs.find(query).sort("updated_at", DESCENDING).limit(limit)
        return await cursor.to_list(None)

    async def stuck(self, *, idle_before: datetime, limit: int) -> list[Doc]:
        """The summaries that may be stuck, the longest idle first, at most ``limit``:
        parked ones, waiting ones without a deadline, and unsettled ones idle since before
        ``idle_before``. Three bounded index range reads; each stuck saga matches one, so
        the first ``limit`` of their union are the first ``limit`` stuck sagas."""
        waiting = {"$in": list(WAITING)}
        queries: list[Doc] = [
            {"status": {"$in": ["compensation_failed", "completing_stuck"]}},
            {"status": waiting, "deadline": None},
            {"status": waiting, "updated_at": {"$lte": idle_before}},
        ]
        found: dict[str, Doc] = {}
        try:
            for query in queries:
                cursor = self.docs.find(query).sort("updated_at", ASCENDING).limit(limit)
                async for doc in cursor:
                    found[doc["_id"]] = doc
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot read saga summaries: {e}") from e
        return sorted(found.values(), key=lambda d: d["updated_at"])[:limit]

    async def unsettled(self) -> AsyncIterator[Doc]:
        """Summaries of sagas that are not terminal (running, compensating, parked)."""
        async for doc in self.docs.find({"status": {"$nin": list(TERMINAL)}}):
            yield doc
