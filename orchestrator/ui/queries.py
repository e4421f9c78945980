"""The UI's reads of the saga summaries: keyset pages and the stuck candidates, each a
bounded index range read, so a page costs the same with 100 sagas or 10 million.

The list is ordered by start time, newest first (as Temporal's is), which makes the age
filter ("started more than X ago") a bound on the sort key. Every filter combination the
UI offers has an index whose equality fields come first and ``started_at`` last:

    ()                       started_at
    status                   status, started_at
    saga                     saga_name, started_at
    saga + status            saga_name, status, started_at
    saga + step (+ status)   saga_name, step, started_at

A step is a step of one saga, so the step filter comes with the saga's name. A page reads
at most ``size + 1`` summaries (the extra one says whether there is a next page); the
next page starts after the last row's (started_at, _id), never with a skip.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pymongo import ASCENDING, DESCENDING
from pymongo.errors import PyMongoError

from orchestrator.errors import StoreUnavailable
from orchestrator.saga.state import Status

if TYPE_CHECKING:
    from pymongo.asynchronous.collection import AsyncCollection

__all__ = [
    "INDEXES",
    "PAGE_SIZE",
    "BadCursor",
    "Cursor",
    "SagaBrowser",
    "SagaFilter",
    "SagaPage",
]

Doc = dict[str, Any]
PAGE_SIZE = 50
WAITING = (Status.RUNNING.value, Status.COMPENSATING.value)
"""Statuses in which a saga waits for a reply (and so has a deadline armed)."""
PARKED = tuple(s.value for s in Status if not s.terminal and s.value not in WAITING)
"""Statuses in which a saga waits for an operator."""

INDEXES: tuple[tuple[tuple[str, int], ...], ...] = (
    (("started_at", DESCENDING),),
    (("status", ASCENDING), ("started_at", DESCENDING)),
    (("saga_name", ASCENDING), ("started_at", DESCENDING)),
    (("saga_name", ASCENDING), ("status", ASCENDING), ("started_at", DESCENDING)),
    (("saga_name", ASCENDING), ("step", ASCENDING), ("started_at", DESCENDING)),
    # The stuck candidates: parked, waiting without a deadline, idle since long ago.
    (("status", ASCENDING), ("updated_at", ASCENDING)),
    (("status", ASCENDING), ("deadline", ASCENDING), ("updated_at", ASCENDING)),
)


class BadCursor(ValueError):
    """A page token that this UI did not make."""


@dataclass(frozen=True, kw_only=True)
class Cursor:
    """Where the next page starts: after this (started_at, saga id)."""

    started_at: datetime
    saga_id: str

    def encode(self) -> str:
        """An opaque token for a URL."""
        raw = json.dumps([self.started_at.isoformat(), self.saga_id]).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        """The cursor a token stands for; BadCursor if it is not one."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            started, saga_id = json.loads(raw)
            at = datetime.fromisoformat(started)
        except (binascii.Error, ValueError, TypeError) as e:
            raise BadCursor(f"not a page token: {token[:40]!r}") from e
        if not isinstance(saga_id, str) or at.tzinfo is None:
            raise BadCursor(f"not a page token: {token[:40]!r}")
        return cls(started_at=at, saga_id=saga_id)


@dataclass(frozen=True, kw_only=True)
class SagaFilter:
    """What the list shows: every given condition holds."""

    saga_name: str | None = None
    statuses: tuple[str, ...] = ()
    step: str | None = None
    min_age: timedelta | None = None
    """Started at least this long ago."""

    def query(self, now: datetime) -> Doc:
        """The MongoDB filter."""
        query: Doc = {}
        if self.saga_name:
            query["saga_name"] = self.saga_name
        if len(self.statuses) == 1:
            query["status"] = self.statuses[0]
        elif self.statuses:
            query["status"] = {"$in": list(self.statuses)}
        if self.step:
            query["step"] = self.step
        if self.min_age is not None:
            query["started_at"] = {"$lte": now - self.min_age}
        return query


@dataclass(frozen=True, kw_only=True)
class SagaPage:
    """One page of summaries, and where the next one starts (None: this is the last)."""

    rows: list[Doc]
    next: Cursor | None


class SagaBrowser:
    """Paged, indexed reads of ``readside_sagas`` for the UI."""

    def __init__(self, *, collection: AsyncCollection[Doc]) -> None:
        self.docs = collection

    async def ensure_indexes(self) -> None:
        """The indexes above. Idempotent; a few seconds once on a large collection."""
        try:
            for keys in INDEXES:
                await self.docs.create_index(list(keys))
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot create the UI's summary indexes: {e}") from e

    async def page(
        self,
        where: SagaFilter,
        *,
        after: Cursor | None = None,
        size: int = PAGE_SIZE,
        now: datetime | None = None,
    ) -> SagaPage:
        """Up to ``size`` summaries, newest start first, after ``after``."""
        query = where.query(now or datetime.now(UTC))
        if after is not None:
            query = {
                "$and": [
                    query,
                    {
                        "$or": [
                            {"started_at": {"$lt": after.started_at}},
                            {"started_at": after.started_at, "_id": {"$lt": after.saga_id}},
                        ]
                    },
                ]
            }
        order = [("started_at", DESCENDING), ("_id", DESCENDING)]
        try:
            rows = await self.docs.find(query).sort(order).limit(size + 1).to_list(None)
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot read saga summaries: {e}") from e
        more = len(rows) > size
        rows = rows[:size]
        last = rows[-1] if rows else None
        following = None
        if more and last is not None and isinstance(last.get("started_at"), datetime):
            following = Cursor(started_at=last["started_at"], saga_id=str(last["_id"]))
        return SagaPage(rows=rows, next=following)

    async def stuck_candidates(self, *, idle_before: datetime, limit: int) -> list[Doc]:
        """Summaries that may be stuck, the longest idle first, at most ``limit``: parked
        ones, waiting ones with no deadline armed, and waiting ones idle since before
        ``idle_before``. Three index reads of at most ``limit`` each, in idle order; every
        stuck saga is among the first ``limit`` of one of them, so the first ``limit`` of
        their union are the first ``limit`` stuck sagas. (The idle ones are the prefix of
        the longest idle waiting ones: no range on the date, which the embedded server
        cannot serve from an index.)"""
        waiting = {"$in": list(WAITING)}
        queries: list[Doc] = [
            {"status": {"$in": list(PARKED)}},
            {"status": waiting, "deadline": None},
            {"status": waiting},
        ]
        found: dict[str, Doc] = {}
        try:
            for query in queries:
                cursor = self.docs.find(query).sort("updated_at", ASCENDING).limit(limit)
                for doc in await cursor.to_list(None):
                    if query is queries[-1] and doc["updated_at"] > idle_before:
                        break
                    found[doc["_id"]] = doc
        except PyMongoError as e:
            raise StoreUnavailable(f"cannot read saga summaries: {e}") from e
        return sorted(found.values(), key=lambda d: d["updated_at"])[:limit]
