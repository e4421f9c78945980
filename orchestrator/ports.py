"""The ports: small protocols the runtime needs from the outside world.

:class:`SagaStore` keeps commits (events plus the outbox) and appends them atomically:
one commit per processed message is a single atomic, versioned, idempotent write, since
(saga_id, version) and (saga_id, causation_id) are unique. A commit also carries the
saga's pending work: its outbox until the broker confirmed it, and the saga's deadline
until the saga moves on. :class:`OutboxStore` and :class:`DeadlineStore` see only that
live work, never the history; :class:`ParkedWorkStore` is the operator's view of the
work that failed too often; :class:`HistoryRetention` removes finished sagas.
:class:`OutboxPublisher` sends one stored message with a confirm. Adapters:
``orchestrator.store.mongo``, ``orchestrator.store.memory``, ``orchestrator.runtime``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from orchestrator.saga.commits import (
        Commit,
        DueDeadline,
        FinishedSaga,
        LiveWork,
        OutboxEntry,
        ParkedWork,
        PendingOutbox,
        PrunablePage,
        WorkKind,
    )
    from orchestrator.saga.state import SagaState

__all__ = [
    "DeadlineStore",
    "HistoryRetention",
    "OutboxPublisher",
    "OutboxStore",
    "ParkedWorkStore",
    "SagaStore",
]


class SagaStore(Protocol):
    """Where sagas live. Adapters: :class:`orchestrator.store.mongo.MongoSagaStore` and
    :class:`orchestrator.store.memory.InMemorySagaStore` (both implement every store port
    here and pass the contract suites in ``tests/contract/``), and
    :class:`orchestrator.runtime.batcher.CommitBatcher` in front of one."""

    async def load(self, saga_id: str) -> SagaState:
        """Replay the saga's commits; an unknown saga is an empty state at version 0."""
        ...

    async def history(self, saga_id: str) -> list[Commit]:
        """Every commit of the saga, oldest first (timelines, tools, tests)."""
        ...

    async def pruned(self, saga_id: str) -> bool:
        """Whether retention removed this saga (a start for it must not run it again)."""
        ...

    async def has_pruned(self) -> bool:
        """Whether retention ever removed a saga from this store (until it did, the
        runtime need not ask :meth:`pruned` for every start)."""
        ...

    async def append(self, commit: Commit) -> None:
        """Store a commit atomically. Raises ``ConcurrencyConflict`` if the version is taken,
        ``DuplicateMessage`` if its causing message was already processed for the saga."""
        ...

    async def append_many(self, commits: Sequence[Commit]) -> list[Exception | None]:
        """Store several commits (of different sagas) in one round trip, each atomically
        and independently: per commit, None if stored, else the error ``append`` would
        have raised. Raises ``StoreUnavailable`` if the store did not answer (then any of
        them may or may not be stored, as with ``append``)."""
        ...


class OutboxStore(Protocol):
    """The commits whose outbox is not known to be published (and only those)."""

    async def mark_dispatched(self, commit_ids: Sequence[str]) -> None:
        """Record that these commits' outboxes were published and confirmed."""
        ...

    async def undispatched(
        self, *, older_than: datetime, limit: int, saga_names: Sequence[str] | None = None
    ) -> list[PendingOutbox]:
        """Pending outboxes stored (or deferred to) at or before ``older_than``, oldest
        first; of the named sagas only, if given. Parked ones are not pending."""
        ...

    async def next_undispatched(
        self, *, saga_names: Sequence[str] | None = None
    ) -> datetime | None:
        """When the oldest pending outbox was stored (or deferred to); None if none is."""
        ...

    async def defer_outbox(
        self, commit_id: str, *, until: datetime, attempts: int, error: str
    ) -> None:
        """A publish failed: count it and treat the outbox as stored at ``until``."""
        ...

    async def park_outbox(self, commit_id: str, *, reason: str, attempts: int) -> None:
        """Stop relaying this outbox (it failed too often): it waits for an operator."""
        ...


class DeadlineStore(Protocol):
    """The deadlines armed by sagas' latest commits (and stale ones not yet cleared)."""

    async def due_deadlines(
        self, *, now: datetime, limit: int, saga_names: Sequence[str] | None = None
    ) -> list[DueDeadline]:
        """Passed deadlines, oldest first, each marked live or stale; of the named sagas
        only, if given. Parked ones are not due."""
        ...

    async def next_deadline(self, *, saga_names: Sequence[str] | None = None) -> datetime | None:
        """The earliest armed deadline; None if none is."""
        ...

    async def clear_deadlines(self, commit_ids: Sequence[str]) -> None:
        """Forget these commits' deadlines (their sagas moved on)."""
        ...

    async def defer_deadline(
        self, commit_id: str, *, until: datetime, attempts: int, error: str
    ) -> None:
        """Handling the deadline failed: count it and make it due again at ``until``."""
        ...

    async def park_deadline(self, commit_id: str, *, reason: str, attempts: int) -> None:
        """Stop firing this deadline (it failed too often): it waits for an operator."""
        ...


class ParkedWorkStore(Protocol):
    """What an operator sees and does about pending and parked work."""

    async def live_work(self, *, cap: int = 100_000) -> LiveWork:
        """The sizes of the live sets (pending outboxes, armed deadlines, parked work)."""
        ...

    async def parked(self, *, limit: int = 100) -> list[ParkedWork]:
        """Parked outboxes and deadlines, oldest first."""
        ...

    async def retry_parked(
        self, commit_id: str, *, now: datetime, kind: WorkKind | None = None
    ) -> list[WorkKind]:
        """Make the commit's parked work (or only ``kind``) pending again, attempts reset;
        returns the kinds that were parked."""
        ...

    async def drop_parked(self, commit_id: str, *, kind: WorkKind | None = None) -> list[WorkKind]:
        """Forget the commit's parked work (or only ``kind``) for good; returns the kinds
        dropped. The commit itself stays in the history."""
        ...


class HistoryRetention(Protocol):
    """Finished sagas removed after a retention time, leaving a tombstone."""

    async def prunable(
        self, *, finished_before: datetime, limit: int, cursor: str | None = None
    ) -> PrunablePage:
        """Sagas that finished (completed, failed, compensated) before the time and have
        nothing pending or parked, oldest first, up to ``limit``; pass the page's cursor
        to continue after it."""
        ...

    async def count_finished(self, *, finished_before: datetime) -> int:
        """How many commits finished a saga before the time (an upper bound of what
        :meth:`prunable` returns, for progress displays)."""
        ...

    async def prune(self, sagas: Sequence[FinishedSaga], *, now: datetime) -> int:
        """Remove the sagas' commits up to the version :meth:`prunable` found, keeping a
        tombstone of each; returns the commits removed."""
        ...

    async def pruned(self, saga_id: str) -> bool:
        """Whether this saga existed and was removed by retention."""
        ...


class OutboxPublisher(Protocol):
    """Sends one stored message; returns once the broker confirmed it."""

    async def publish(self, *, commit: Commit, entry: OutboxEntry) -> None:
        """Publish ``entry`` of ``commit``; raise ``BrokerUnavailable`` if not confirmed,
        ``Unroutable`` if the broker confirmed that no queue takes it."""
        ...
