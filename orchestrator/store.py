"""The saga store port: commits of events plus the outbox, appended atomically.

One commit per processed message: the saga id, its new version, the events, the messages
to send, and the id of the message that caused it. Appending one is a single atomic,
versioned, idempotent write: (saga_id, version) and (saga_id, causation_id) are unique.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from contracts import Message, resolve
from orchestrator.decide import Outgoing
from orchestrator.state import SagaEvent, SagaState

__all__ = ["Commit", "DueDeadline", "OutboxEntry", "SagaStore"]


@dataclass(frozen=True, kw_only=True)
class OutboxEntry:
    """A message stored with the commit that caused it, published by the relay."""

    kind: Literal["command", "event"]
    type: str
    body: dict[str, Any]
    message_id: str
    routing_key: str

    @classmethod
    def of(cls, out: Outgoing) -> OutboxEntry:
        """Store an outgoing message."""
        return cls(
            kind=out.kind,
            type=out.message.TYPE,
            body=out.message.model_dump(mode="json"),
            message_id=out.message_id,
            routing_key=out.routing_key,
        )

    def message(self) -> Message:
        """The contract to publish."""
        return resolve(self.type).model_validate(self.body)

    def to_doc(self) -> dict[str, Any]:
        """Stored form."""
        return {
            "kind": self.kind,
            "type": self.type,
            "body": self.body,
            "message_id": self.message_id,
            "routing_key": self.routing_key,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> OutboxEntry:
        """Read the stored form."""
        return cls(
            kind=doc["kind"],
            type=doc["type"],
            body=doc["body"],
            message_id=doc["message_id"],
            routing_key=doc["routing_key"],
        )


@dataclass(frozen=True, kw_only=True)
class Commit:
    """Everything one processed message changed for one saga."""

    saga_id: str
    version: int
    causation_id: str
    events: tuple[SagaEvent, ...]
    outbox: tuple[OutboxEntry, ...] = ()
    created_at: datetime
    deadline: datetime | None = None
    """The saga's deadline after this commit, for the timeout poller."""
    status: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """Unique per saga version."""
        return f"{self.saga_id}:{self.version}"


@dataclass(frozen=True, kw_only=True)
class DueDeadline:
    """A stored deadline that has passed. ``live`` if its commit is still the latest."""

    commit_id: str
    saga_id: str
    version: int
    deadline: datetime
    live: bool


class SagaStore(Protocol):
    """Where sagas live. Adapters: :class:`orchestrator.mongo_store.MongoSagaStore`."""

    async def load(self, saga_id: str) -> SagaState:
        """Replay the saga's commits; an unknown saga is an empty state at version 0."""
        ...

    async def append(self, commit: Commit) -> None:
        """Store a commit atomically. Raises ``ConcurrencyConflict`` if the version is taken,
        ``DuplicateMessage`` if its causing message was already processed for the saga."""
        ...

    async def mark_dispatched(self, commit_ids: Sequence[str]) -> None:
        """Record that these commits' outboxes were published and confirmed."""
        ...

    async def undispatched(self, *, older_than: datetime, limit: int) -> list[Commit]:
        """Commits whose outbox may not have been published, oldest first."""
        ...

    async def due_deadlines(self, *, now: datetime, limit: int) -> list[DueDeadline]:
        """Passed deadlines, oldest first, each marked live or stale."""
        ...

    async def clear_deadlines(self, commit_ids: Sequence[str]) -> None:
        """Forget stale deadlines."""
        ...
