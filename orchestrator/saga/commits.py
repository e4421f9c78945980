"""What one processed message changes for one saga: a commit of events and the outbox.

One commit per processed message: the saga id, its new version, the events, the messages
to send, and the id of the message that caused it. Pure data: the store adapters write
and read it, the runtime builds it from a decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from contracts import Message, validate

if TYPE_CHECKING:
    from orchestrator.saga.decide import Outgoing
    from orchestrator.saga.state import SagaEvent

__all__ = [
    "Commit",
    "DueDeadline",
    "FinishedSaga",
    "LiveWork",
    "OutboxEntry",
    "ParkedWork",
    "PendingOutbox",
    "PrunablePage",
    "WorkKind",
]

WorkKind = Literal["outbox", "deadline"]
"""The two kinds of pending work a commit can carry: its outbox (until the broker
confirmed it) and the saga's deadline after it (until the saga moves on)."""


@dataclass(frozen=True, kw_only=True)
class OutboxEntry:
    """A message stored with the commit that caused it, published by the relay."""

    kind: Literal["command", "event"]
    type: str
    body: dict[str, Any]
    message_id: str
    routing_key: str
    trace: Mapping[str, str] = field(default_factory=dict)
    """W3C trace context (``traceparent``, ``tracestate``) of the work that stored it, so
    that a later publish (the relay's, after a crash) continues its trace. Empty when
    tracing is off; plain strings, the core knows nothing of tracing."""

    @classmethod
    def of(cls, out: Outgoing, *, trace: Mapping[str, str] | None = None) -> OutboxEntry:
        """Store an outgoing message (with the trace context it is sent in, if any)."""
        return cls(
            kind=out.kind,
            type=out.message.TYPE,
            body=out.message.model_dump(mode="json"),
            message_id=out.message_id,
            routing_key=out.routing_key,
            trace=trace or {},
        )

    def message(self) -> Message:
        """The contract to publish."""
        return validate(self.type, self.body)

    def to_doc(self) -> dict[str, Any]:
        """Stored form (``trace`` only when there is one)."""
        doc = {
            "kind": self.kind,
            "type": self.type,
            "body": self.body,
            "message_id": self.message_id,
            "routing_key": self.routing_key,
        }
        if self.trace:
            doc["trace"] = dict(self.trace)
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> OutboxEntry:
        """Read the stored form."""
        return cls(
            kind=doc["kind"],
            type=doc["type"],
            body=doc["body"],
            message_id=doc["message_id"],
            routing_key=doc["routing_key"],
            trace=doc.get("trace") or {},
        )


@dataclass(frozen=True, kw_only=True)
class Commit:
    """Everything one processed message changed for one saga."""

    saga_id: str
    version: int
    causation_id: str
    events: tuple[SagaEvent, ...]
    saga_name: str = ""
    """The saga's definition name (stored with every commit, so pollers and tools route
    each saga to the definition it started with)."""
    saga_version: int = 1
    """The version of that definition the saga runs on."""
    starts: bool = False
    """This commit starts the saga."""
    ends: bool = False
    """This commit ends the saga (completed, failed or compensated). With ``starts`` it
    lets the store count the sagas in flight per version without reading them."""
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
class PendingOutbox:
    """A commit whose outbox is not known to be published, and the failed attempts to
    publish it so far."""

    commit: Commit
    attempts: int = 0


@dataclass(frozen=True, kw_only=True)
class DueDeadline:
    """A stored deadline that has passed. ``live`` if its commit is still the latest."""

    commit_id: str
    saga_id: str
    saga_name: str
    version: int
    deadline: datetime
    live: bool
    attempts: int = 0
    """Earlier attempts to handle this deadline that failed."""
    trace: Mapping[str, str] = field(default_factory=dict)
    """The trace context stored with the commit that armed it (with its outbox), so that
    what the deadline sends (a resend, a compensation) continues the saga's trace."""


@dataclass(frozen=True, kw_only=True)
class ParkedWork:
    """An outbox or a deadline that failed too often and waits for an operator, who can
    retry it or drop it. ``commit_id`` is ``<saga_id>:<version>``."""

    kind: WorkKind
    commit_id: str
    saga_id: str
    saga_name: str
    version: int
    reason: str
    attempts: int
    parked_at: datetime
    messages: tuple[str, ...] = ()
    """The outbox's message types (for an outbox)."""


@dataclass(frozen=True, kw_only=True)
class LiveWork:
    """The sizes of the live sets: what is pending or parked now, never history.
    A count reaching ``cap`` means at least that many."""

    pending_outbox: int
    active_deadlines: int
    parked_outbox: int
    parked_deadlines: int
    cap: int


@dataclass(frozen=True, kw_only=True)
class FinishedSaga:
    """A saga whose latest commit (``version``) finished it, with nothing pending."""

    saga_id: str
    saga_name: str
    version: int
    status: str
    finished_at: datetime


@dataclass(frozen=True, kw_only=True)
class PrunablePage:
    """Finished sagas retention may remove, and where the next page starts (None when
    there is no more)."""

    sagas: tuple[FinishedSaga, ...]
    cursor: str | None
    scanned: int = 0
    """Candidates looked at for this page (some were not prunable)."""
