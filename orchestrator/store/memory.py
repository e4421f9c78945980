"""The saga store in memory: every port :class:`MongoSagaStore` implements, no server.

For tests and the in-memory test kit (``orchestrator.testing``). Each commit is kept as
the very document MongoDB would hold (:func:`orchestrator.store.shape.commit_to_doc`),
passed through BSON on the way in and out, so it keeps and refuses what MongoDB does:
datetimes read back in UTC to the millisecond, tuples as lists, a number beyond 64 bits
is refused as malformed input, nothing the caller holds is shared with the store. The
queries are those of :mod:`orchestrator.store.work` and
:mod:`orchestrator.store.retention`, over a dictionary: live work is the documents that
have a live field (``outbox_at``, ``deadline_at``, ``parked_at``), never the history.
Both adapters pass one contract suite (``tests/contract/test_saga_store.py``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import bson
from bson.codec_options import CodecOptions
from bson.errors import InvalidDocument

from contracts import MalformedMessage
from orchestrator.errors import ConcurrencyConflict, DuplicateMessage
from orchestrator.saga.commits import (
    Commit,
    DueDeadline,
    FinishedSaga,
    LiveWork,
    ParkedWork,
    PendingOutbox,
    PrunablePage,
    WorkKind,
)
from orchestrator.saga.state import SagaEvent, SagaState, replay
from orchestrator.store.shape import (
    DEADLINE_AT,
    FINISHED_AT,
    OUTBOX_AT,
    PARKED_AT,
    Doc,
    commit_from_doc,
    commit_to_doc,
    from_ms,
    outbox_trace,
    to_ms,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from orchestrator.ports import (
        DeadlineStore,
        HistoryRetention,
        OutboxStore,
        ParkedWorkStore,
        SagaStore,
    )

__all__ = ["InMemorySagaStore"]

KINDS: tuple[WorkKind, ...] = ("outbox", "deadline")
LIVE = {"outbox": OUTBOX_AT, "deadline": DEADLINE_AT}
# Dates come back tz-aware in UTC, as ``connect_mongo``'s client reads them.
READ_AS_MONGO: CodecOptions[Doc] = CodecOptions(tz_aware=True)


class InMemorySagaStore:
    """Saga commits as documents in dictionaries; tombstones of pruned sagas beside."""

    def __init__(self) -> None:
        self._docs: dict[str, Doc] = {}  # by ``_id``, in insertion order
        self._sagas: dict[str, dict[int, Doc]] = {}  # the same documents, by saga and version
        self._tombstones: dict[str, Doc] = {}
        self.appends = 0
        """Commits stored."""

    # -- SagaStore -----------------------------------------------------------------------

    async def load(self, saga_id: str) -> SagaState:
        """Replay the saga's commits in version order."""
        return replay(
            saga_id,
            (
                (d["version"], d["causation_id"], [SagaEvent.from_doc(e) for e in d["events"]])
                for d in self._history(saga_id)
            ),
        )

    async def history(self, saga_id: str) -> list[Commit]:
        """Every commit of a saga, oldest first, its deadline as armed now."""
        return [commit_from_doc(d) for d in self._history(saga_id)]

    async def append(self, commit: Commit) -> None:
        """Store the commit; a taken version or a processed message is refused."""
        (outcome,) = await self.append_many([commit])
        if outcome is not None:
            raise outcome

    async def append_many(self, commits: Sequence[Commit]) -> list[Exception | None]:
        """Store each commit on its own, in order (as ``insert_many(ordered=False)``)."""
        return [self._insert(commit) for commit in commits]

    def _insert(self, commit: Commit) -> Exception | None:
        try:
            doc = _bson(commit_to_doc(commit))
        except (InvalidDocument, OverflowError) as e:
            return MalformedMessage(
                "schema_violation", f"saga {commit.saga_id} cannot be stored: {e}"
            )
        versions = self._sagas.get(commit.saga_id, {})
        if any(d["causation_id"] == commit.causation_id for d in versions.values()):
            return DuplicateMessage(
                f"message {commit.causation_id} already processed for saga {commit.saga_id}"
            )
        if doc["_id"] in self._docs:
            return ConcurrencyConflict(f"saga {commit.saga_id} version {commit.version} is taken")
        self._docs[doc["_id"]] = doc
        self._sagas.setdefault(commit.saga_id, {})[commit.version] = doc
        self.appends += 1
        return None

    def _history(self, saga_id: str) -> list[Doc]:
        versions = self._sagas.get(saga_id, {})
        return [_bson(versions[v]) for v in sorted(versions)]

    # -- OutboxStore ---------------------------------------------------------------------

    async def mark_dispatched(self, commit_ids: Sequence[str]) -> None:
        """The outboxes were confirmed: they leave the live set."""
        self._unset(commit_ids, OUTBOX_AT, "outbox_attempts", "outbox_error")

    async def undispatched(
        self, *, older_than: datetime, limit: int, saga_names: Sequence[str] | None = None
    ) -> list[PendingOutbox]:
        """Pending outboxes stored or deferred at or before ``older_than``, oldest first."""
        cutoff = to_ms(older_than)
        due = [d for d in self._live(OUTBOX_AT, saga_names) if d[OUTBOX_AT] <= cutoff]
        return [
            PendingOutbox(commit=commit_from_doc(_bson(d)), attempts=d.get("outbox_attempts", 0))
            for d in due[:limit]
        ]

    async def next_undispatched(
        self, *, saga_names: Sequence[str] | None = None
    ) -> datetime | None:
        """When the oldest pending outbox was stored or deferred to."""
        return self._earliest(OUTBOX_AT, saga_names)

    async def defer_outbox(
        self, commit_id: str, *, until: datetime, attempts: int, error: str
    ) -> None:
        """Count a failed publish; the outbox is pending as if stored ``until``."""
        self._defer(commit_id, "outbox", until=until, attempts=attempts, error=error)

    async def park_outbox(self, commit_id: str, *, reason: str, attempts: int) -> None:
        """Out of the relay's sight until an operator retries or drops it."""
        self._park(commit_id, "outbox", reason=reason, attempts=attempts)

    # -- DeadlineStore -------------------------------------------------------------------

    async def due_deadlines(
        self, *, now: datetime, limit: int, saga_names: Sequence[str] | None = None
    ) -> list[DueDeadline]:
        """Passed deadlines, oldest first; live while no later version of the saga exists."""
        cutoff = to_ms(now)
        due = [d for d in self._live(DEADLINE_AT, saga_names) if d[DEADLINE_AT] <= cutoff]
        return [
            DueDeadline(
                commit_id=d["_id"],
                saga_id=d["saga_id"],
                saga_name=d["saga_name"],
                version=d["version"],
                deadline=from_ms(d[DEADLINE_AT]),
                live=f"{d['saga_id']}:{d['version'] + 1}" not in self._docs,
                attempts=d.get("deadline_attempts", 0),
                trace=outbox_trace(d),
            )
            for d in due[:limit]
        ]

    async def next_deadline(self, *, saga_names: Sequence[str] | None = None) -> datetime | None:
        """The earliest armed (or deferred) deadline."""
        return self._earliest(DEADLINE_AT, saga_names)

    async def clear_deadlines(self, commit_ids: Sequence[str]) -> None:
        """Forget deadlines that no longer apply (their saga moved on), parked or not."""
        self._unset(
            commit_ids, DEADLINE_AT, "deadline_attempts", "deadline_error", "deadline_parked"
        )
        for commit_id in commit_ids:
            doc = self._docs.get(commit_id)
            if doc is not None and not _parked_kinds(doc):
                doc.pop(PARKED_AT, None)

    async def defer_deadline(
        self, commit_id: str, *, until: datetime, attempts: int, error: str
    ) -> None:
        """Count a failed attempt; the deadline is due again at ``until``."""
        self._defer(commit_id, "deadline", until=until, attempts=attempts, error=error)

    async def park_deadline(self, commit_id: str, *, reason: str, attempts: int) -> None:
        """Out of the watcher's sight until an operator retries or drops it."""
        self._park(commit_id, "deadline", reason=reason, attempts=attempts)

    # -- ParkedWorkStore -----------------------------------------------------------------

    async def live_work(self, *, cap: int = 100_000) -> LiveWork:
        """Sizes of the live sets (each at most ``cap``)."""
        parked = self._live(PARKED_AT, None)[:cap]
        return LiveWork(
            pending_outbox=min(len(self._live(OUTBOX_AT, None)), cap),
            active_deadlines=min(len(self._live(DEADLINE_AT, None)), cap),
            parked_outbox=sum(1 for d in parked if "outbox_parked" in d),
            parked_deadlines=sum(1 for d in parked if "deadline_parked" in d),
            cap=cap,
        )

    async def parked(self, *, limit: int = 100) -> list[ParkedWork]:
        """Parked outboxes and deadlines, oldest first."""
        return [
            ParkedWork(
                kind=kind,
                commit_id=d["_id"],
                saga_id=d["saga_id"],
                saga_name=d["saga_name"],
                version=d["version"],
                reason=d[f"{kind}_parked"],
                attempts=d.get(f"{kind}_attempts", 0),
                parked_at=from_ms(d[PARKED_AT]),
                messages=tuple(o["type"] for o in d["outbox"]) if kind == "outbox" else (),
            )
            for d in self._live(PARKED_AT, None)[:limit]
            for kind in _parked_kinds(d)
        ][:limit]

    async def retry_parked(
        self, commit_id: str, *, now: datetime, kind: WorkKind | None = None
    ) -> list[WorkKind]:
        """Pending again, due now, attempts reset."""
        return self._unpark(commit_id, kind, retry_at=to_ms(now))

    async def drop_parked(self, commit_id: str, *, kind: WorkKind | None = None) -> list[WorkKind]:
        """Gone for good (the commit stays in the history)."""
        return self._unpark(commit_id, kind, retry_at=None)

    def _unpark(
        self, commit_id: str, kind: WorkKind | None, *, retry_at: int | None
    ) -> list[WorkKind]:
        doc = self._docs.get(commit_id)
        if doc is None:
            return []
        kinds = [k for k in _parked_kinds(doc) if kind in (None, k)]
        for k in kinds:
            for name in (f"{k}_parked", f"{k}_attempts", f"{k}_error"):
                doc.pop(name, None)
            if retry_at is not None:
                doc[LIVE[k]] = retry_at
        if not _parked_kinds(doc):
            doc.pop(PARKED_AT, None)
        return kinds

    # -- HistoryRetention ----------------------------------------------------------------

    async def prunable(
        self, *, finished_before: datetime, limit: int, cursor: str | None = None
    ) -> PrunablePage:
        """Finished sagas with nothing pending or parked, oldest first, after ``cursor``."""
        cutoff, after = to_ms(finished_before), _cursor(cursor)
        candidates = sorted(
            (
                d
                for d in self._docs.values()
                if FINISHED_AT in d
                and d[FINISHED_AT] < cutoff
                and (after is None or (d[FINISHED_AT], d["_id"]) > after)
            ),
            key=lambda d: (d[FINISHED_AT], d["_id"]),
        )[:limit]
        work = (OUTBOX_AT, DEADLINE_AT, PARKED_AT)
        busy = {d["saga_id"] for name in work for d in self._live(name, None)}
        found = tuple(
            FinishedSaga(
                saga_id=d["saga_id"],
                saga_name=d["saga_name"],
                version=d["version"],
                status=str(d["status"]),
                finished_at=from_ms(d[FINISHED_AT]),
            )
            for d in candidates
            if f"{d['saga_id']}:{d['version'] + 1}" not in self._docs and d["saga_id"] not in busy
        )
        last = candidates[-1] if len(candidates) == limit else None
        return PrunablePage(
            sagas=found,
            cursor=f"{last[FINISHED_AT]}/{last['_id']}" if last else None,
            scanned=len(candidates),
        )

    async def count_finished(self, *, finished_before: datetime) -> int:
        """Commits that finished a saga before the time."""
        cutoff = to_ms(finished_before)
        return sum(1 for d in self._docs.values() if d.get(FINISHED_AT, cutoff) < cutoff)

    async def prune(self, sagas: Sequence[FinishedSaga], *, now: datetime) -> int:
        """A tombstone per saga (the first one stays), then its commits up to the version."""
        removed = 0
        for saga in sagas:
            self._tombstones.setdefault(saga.saga_id, {"saga": saga, "pruned_at": now})
            versions = self._sagas.get(saga.saga_id, {})
            for version in range(1, saga.version + 1):
                if versions.pop(version, None) is not None:
                    del self._docs[f"{saga.saga_id}:{version}"]
                    removed += 1
            if not versions:
                self._sagas.pop(saga.saga_id, None)
        return removed

    async def pruned(self, saga_id: str) -> bool:
        """Whether retention removed this saga."""
        return saga_id in self._tombstones

    async def has_pruned(self) -> bool:
        """Whether retention ever removed a saga from this store."""
        return bool(self._tombstones)

    # -- shared --------------------------------------------------------------------------

    def _live(self, name: str, saga_names: Sequence[str] | None) -> list[Doc]:
        """The documents with the live field ``name`` (of the named sagas), ordered by
        it; equal times in insertion order."""
        return sorted(
            (
                d
                for d in self._docs.values()
                if name in d and (saga_names is None or d["saga_name"] in saga_names)
            ),
            key=lambda d: d[name],
        )

    def _earliest(self, name: str, saga_names: Sequence[str] | None) -> datetime | None:
        live = self._live(name, saga_names)
        return from_ms(live[0][name]) if live else None

    def _unset(self, commit_ids: Sequence[str], *names: str) -> None:
        for commit_id in commit_ids:
            doc = self._docs.get(commit_id, {})
            for name in names:
                doc.pop(name, None)

    def _defer(
        self, commit_id: str, kind: WorkKind, *, until: datetime, attempts: int, error: str
    ) -> None:
        doc = self._docs.get(commit_id, {})
        if LIVE[kind] in doc:  # only while still pending: a confirm must not be undone
            doc |= {LIVE[kind]: to_ms(until), f"{kind}_attempts": attempts, f"{kind}_error": error}

    def _park(self, commit_id: str, kind: WorkKind, *, reason: str, attempts: int) -> None:
        doc = self._docs.get(commit_id, {})
        if LIVE[kind] in doc:
            del doc[LIVE[kind]]
            doc.pop(f"{kind}_error", None)
            doc |= {
                f"{kind}_parked": reason,
                f"{kind}_attempts": attempts,
                PARKED_AT: to_ms(datetime.now(UTC)),
            }


def _parked_kinds(doc: Doc) -> list[WorkKind]:
    return [k for k in KINDS if f"{k}_parked" in doc]


def _cursor(text: str | None) -> tuple[int, str] | None:
    if not text:
        return None
    ms, _, commit_id = text.partition("/")
    return int(ms), commit_id


def _bson(doc: Doc) -> Doc:
    """The document as MongoDB stores it and gives it back (a copy of its own)."""
    return bson.decode(bson.encode(doc), codec_options=READ_AS_MONGO)


if TYPE_CHECKING:

    def _implements_every_store_port(
        store: InMemorySagaStore,
    ) -> tuple[SagaStore, OutboxStore, DeadlineStore, ParkedWorkStore, HistoryRetention]:
        return store, store, store, store, store
