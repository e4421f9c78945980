"""The live work of the saga store: pending outboxes, armed deadlines, parked work.

Every query here runs on a sparse index over a field that exists only while its work is
pending (:mod:`orchestrator.store.shape`), so its cost follows the sagas in flight, not
the sagas ever run. Liveness of a deadline is one ``_id`` lookup per batch: a commit's
deadline is stale once the saga's next version exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pymongo import ASCENDING
from pymongo.errors import PyMongoError

from orchestrator.errors import StoreUnavailable
from orchestrator.saga.commits import DueDeadline, LiveWork, ParkedWork, PendingOutbox, WorkKind
from orchestrator.store.shape import (
    DEADLINE_AT,
    OUTBOX_AT,
    PARKED_AT,
    Doc,
    commit_from_doc,
    from_ms,
    outbox_trace,
    to_ms,
)

if TYPE_CHECKING:
    from pymongo.asynchronous.collection import AsyncCollection

__all__ = ["MongoWork"]

KINDS: tuple[WorkKind, ...] = ("outbox", "deadline")
LIVE = {"outbox": OUTBOX_AT, "deadline": DEADLINE_AT}
WORK_FIELDS = ("saga_id", "saga_name", "version", OUTBOX_AT, DEADLINE_AT, PARKED_AT)


def _named(query: Doc, saga_names: Sequence[str] | None) -> Doc:
    if saga_names is not None:
        query["saga_name"] = {"$in": list(saga_names)}
    return query


def _types(doc: Doc) -> tuple[str, ...]:
    return tuple(str(o.get("type")) for o in doc.get("outbox") or [])


class MongoWork:
    """Outbox, deadline and parked-work ports over ``saga_commits``."""

    commits: AsyncCollection[Doc]

    # -- outbox --------------------------------------------------------------------------

    async def mark_dispatched(self, commit_ids: Sequence[str]) -> None:
        """The outboxes were confirmed: they leave the live set (one write per batch)."""
        done = {OUTBOX_AT: "", "outbox_attempts": "", "outbox_error": ""}
        await self._update_many(commit_ids, {"$unset": done}, "mark outboxes dispatched")

    async def undispatched(
        self, *, older_than: datetime, limit: int, saga_names: Sequence[str] | None = None
    ) -> list[PendingOutbox]:
        """Pending outboxes stored or deferred before ``older_than``, oldest first."""
        query = _named({OUTBOX_AT: {"$lte": to_ms(older_than)}}, saga_names)
        try:
            docs = await self.commits.find(query).sort(OUTBOX_AT, ASCENDING).limit(limit).to_list()
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot read the outbox: {e}") from e
        return [
            PendingOutbox(commit=commit_from_doc(d), attempts=int(d.get("outbox_attempts") or 0))
            for d in docs
        ]

    async def next_undispatched(
        self, *, saga_names: Sequence[str] | None = None
    ) -> datetime | None:
        """When the oldest pending outbox was stored or deferred to."""
        return await self._earliest(OUTBOX_AT, saga_names)

    async def defer_outbox(
        self, commit_id: str, *, until: datetime, attempts: int, error: str
    ) -> None:
        """Count a failed publish; the relay takes the outbox again as if stored ``until``."""
        await self._defer(commit_id, "outbox", until=until, attempts=attempts, error=error)

    async def park_outbox(self, commit_id: str, *, reason: str, attempts: int) -> None:
        """Out of the relay's sight until an operator retries or drops it."""
        await self._park(commit_id, "outbox", reason=reason, attempts=attempts)

    # -- deadlines -----------------------------------------------------------------------

    async def due_deadlines(
        self, *, now: datetime, limit: int, saga_names: Sequence[str] | None = None
    ) -> list[DueDeadline]:
        """Passed deadlines, oldest first, each marked live or stale (two queries)."""
        query = _named({DEADLINE_AT: {"$lte": to_ms(now)}}, saga_names)
        fields = {"saga_id": 1, "saga_name": 1, "version": 1, DEADLINE_AT: 1}
        try:
            docs = await (
                self.commits.find(query, {**fields, "deadline_attempts": 1, "outbox": 1})
                .sort(DEADLINE_AT, ASCENDING)
                .limit(limit)
                .to_list()
            )
            if not docs:
                return []
            successors = [f"{d['saga_id']}:{d['version'] + 1}" for d in docs]
            moved_on = {
                d["_id"] async for d in self.commits.find({"_id": {"$in": successors}}, {"_id": 1})
            }
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot read deadlines: {e}") from e
        return [
            DueDeadline(
                commit_id=d["_id"],
                saga_id=d["saga_id"],
                saga_name=d.get("saga_name") or "",
                version=d["version"],
                deadline=from_ms(d[DEADLINE_AT]),
                live=f"{d['saga_id']}:{d['version'] + 1}" not in moved_on,
                attempts=int(d.get("deadline_attempts") or 0),
                trace=outbox_trace(d),
            )
            for d in docs
        ]

    async def next_deadline(self, *, saga_names: Sequence[str] | None = None) -> datetime | None:
        """The earliest armed (or deferred) deadline."""
        return await self._earliest(DEADLINE_AT, saga_names)

    async def clear_deadlines(self, commit_ids: Sequence[str]) -> None:
        """Forget deadlines that no longer apply (their saga moved on), parked or not."""
        stale = {
            DEADLINE_AT: "",
            "deadline_attempts": "",
            "deadline_error": "",
            "deadline_parked": "",
        }
        await self._update_many(commit_ids, {"$unset": stale}, "clear deadlines")

    async def defer_deadline(
        self, commit_id: str, *, until: datetime, attempts: int, error: str
    ) -> None:
        """Count a failed attempt; the deadline is due again at ``until``."""
        await self._defer(commit_id, "deadline", until=until, attempts=attempts, error=error)

    async def park_deadline(self, commit_id: str, *, reason: str, attempts: int) -> None:
        """Out of the watcher's sight until an operator retries or drops it."""
        await self._park(commit_id, "deadline", reason=reason, attempts=attempts)

    # -- operators -----------------------------------------------------------------------

    async def live_work(self, *, cap: int = 100_000) -> LiveWork:
        """Sizes of the live sets, each counted from its own index (at most ``cap``)."""
        try:
            counts = [
                len(await self.commits.find({name: {"$gte": 0}}, {"_id": 1}).limit(cap).to_list())
                for name in (OUTBOX_AT, DEADLINE_AT)
            ]
            parked = await self._parked_docs(cap)
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot count the live work: {e}") from e
        return LiveWork(
            pending_outbox=counts[0],
            active_deadlines=counts[1],
            parked_outbox=sum(1 for d in parked if d.get("outbox_parked")),
            parked_deadlines=sum(1 for d in parked if d.get("deadline_parked")),
            cap=cap,
        )

    async def parked(self, *, limit: int = 100) -> list[ParkedWork]:
        """Parked outboxes and deadlines, oldest first."""
        try:
            docs = await self._parked_docs(limit)
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot read parked work: {e}") from e
        orphans = [d["_id"] for d in docs if not any(d.get(f"{k}_parked") for k in KINDS)]
        if orphans:  # their deadline was cleared while parked: no longer parked at all
            await self._update_many(orphans, {"$unset": {PARKED_AT: ""}}, "unpark")
        found = [
            ParkedWork(
                kind=kind,
                commit_id=d["_id"],
                saga_id=d["saga_id"],
                saga_name=d.get("saga_name") or "",
                version=d["version"],
                reason=str(d[f"{kind}_parked"]),
                attempts=int(d.get(f"{kind}_attempts") or 0),
                parked_at=from_ms(d[PARKED_AT]),
                messages=_types(d) if kind == "outbox" else (),
            )
            for d in docs
            for kind in KINDS
            if d.get(f"{kind}_parked")
        ]
        return found[:limit]

    async def _parked_docs(self, limit: int) -> list[Doc]:
        return (
            await self.commits.find({PARKED_AT: {"$gte": 0}}, {"events": 0})
            .sort(PARKED_AT, ASCENDING)
            .limit(limit)
            .to_list()
        )

    async def retry_parked(
        self, commit_id: str, *, now: datetime, kind: WorkKind | None = None
    ) -> list[WorkKind]:
        """Pending again, due now, attempts reset."""
        return await self._unpark(commit_id, kind, retry_at=to_ms(now))

    async def drop_parked(self, commit_id: str, *, kind: WorkKind | None = None) -> list[WorkKind]:
        """Gone for good (the commit stays in the history)."""
        return await self._unpark(commit_id, kind, retry_at=None)

    async def _unpark(
        self, commit_id: str, kind: WorkKind | None, *, retry_at: int | None
    ) -> list[WorkKind]:
        try:
            doc = await self.commits.find_one({"_id": commit_id}, {"events": 0, "outbox": 0})
            if doc is None:
                return []
            kinds = [k for k in KINDS if doc.get(f"{k}_parked") and kind in (None, k)]
            if not kinds:
                return []
            unset: dict[str, str] = {}
            restore: dict[str, Any] = {}
            for k in kinds:
                unset |= {f"{k}_parked": "", f"{k}_attempts": "", f"{k}_error": ""}
                if retry_at is not None:
                    restore[LIVE[k]] = retry_at
            if not any(doc.get(f"{k}_parked") for k in KINDS if k not in kinds):
                unset[PARKED_AT] = ""
            update: Doc = {"$unset": unset}
            if restore:
                update["$set"] = restore
            await self.commits.update_one({"_id": commit_id}, update)
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot change parked work of {commit_id}: {e}") from e
        return kinds

    # -- shared --------------------------------------------------------------------------

    async def _earliest(self, name: str, saga_names: Sequence[str] | None) -> datetime | None:
        try:
            docs = await (
                self.commits.find(_named({name: {"$gte": 0}}, saga_names), {name: 1})
                .sort(name, ASCENDING)
                .limit(1)
                .to_list()
            )
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot read the live work: {e}") from e
        return from_ms(docs[0][name]) if docs else None

    async def _defer(
        self, commit_id: str, kind: WorkKind, *, until: datetime, attempts: int, error: str
    ) -> None:
        live = LIVE[kind]
        update = {
            "$set": {live: to_ms(until), f"{kind}_attempts": attempts, f"{kind}_error": error}
        }
        try:
            # Only while still pending: a confirm that came meanwhile must not be undone.
            await self.commits.update_one({"_id": commit_id, live: {"$gte": 0}}, update)
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot defer the {kind} of {commit_id}: {e}") from e

    async def _park(self, commit_id: str, kind: WorkKind, *, reason: str, attempts: int) -> None:
        live = LIVE[kind]
        update = {
            "$set": {
                f"{kind}_parked": reason,
                f"{kind}_attempts": attempts,
                PARKED_AT: to_ms(datetime.now(UTC)),
            },
            "$unset": {live: "", f"{kind}_error": ""},
        }
        try:
            await self.commits.update_one({"_id": commit_id, live: {"$gte": 0}}, update)
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot park the {kind} of {commit_id}: {e}") from e

    async def _update_many(self, commit_ids: Sequence[str], update: Doc, what: str) -> None:
        """One ``update_many`` by ``_id`` for a batch of commits."""
        if not commit_ids:
            return
        try:
            await self.commits.update_many({"_id": {"$in": list(commit_ids)}}, update)
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot {what} ({len(commit_ids)} commits): {e}") from e
