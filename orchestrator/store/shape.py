"""How a commit is stored in ``saga_commits``: one document per processed message.

The history fields never change after the insert: ``_id`` (``<saga_id>:<version>``),
``saga_id``, ``saga_name``, ``version``, ``causation_id``, ``events``, ``outbox``,
``created_at``, ``status``, ``meta``, and ``finished_at`` on a commit that leaves its
saga completed, failed or compensated (for retention). Each ``outbox`` entry carries
``trace`` (W3C ``traceparent``/``tracestate``) when tracing was on, so that the relay's
republish continues the trace of the message that caused the commit.

The live-work fields exist only while there is work, so that the indexes over them (and
the queries of the outbox relay and the deadline watcher) follow the work in flight, not
the history:

* ``outbox_at``: the outbox is not known to be published; when it was stored (or the
  time a failed publish was deferred to). Removed when the broker confirmed it.
* ``deadline_at``: the saga's deadline after this commit, while it may still apply.
  Removed when the saga's next commit is stored (or the watcher finds it stale).
* ``outbox_attempts``/``outbox_error`` and ``deadline_attempts``/``deadline_error``:
  failed attempts so far.
* ``parked_at`` with ``outbox_parked``/``deadline_parked`` (the reasons): work that
  failed too often and waits for an operator.

Times of live fields are epoch milliseconds (numbers), so that every server can answer
a range query from the index (the embedded server compares datetimes in Python, one
document at a time). The fields are written by the same insert as the commit, so the
outbox and the deadline are stored atomically with the events that caused them.

Commits written before this shape carry ``dispatched`` and ``deadline`` instead;
:mod:`orchestrator.store.legacy` converts them once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from orchestrator.saga.commits import Commit, OutboxEntry
from orchestrator.saga.state import SagaEvent

__all__ = [
    "DEADLINE_AT",
    "FINISHED_AT",
    "OUTBOX_AT",
    "PARKED_AT",
    "TERMINAL",
    "Doc",
    "commit_from_doc",
    "commit_to_doc",
    "from_ms",
    "outbox_trace",
    "to_ms",
]

Doc = dict[str, Any]
OUTBOX_AT = "outbox_at"
DEADLINE_AT = "deadline_at"
PARKED_AT = "parked_at"
FINISHED_AT = "finished_at"
TERMINAL = ("completed", "failed", "compensated")


def to_ms(at: datetime) -> int:
    """Epoch milliseconds of an aware (or UTC-naive) datetime."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return int(at.timestamp() * 1000)


def from_ms(ms: float) -> datetime:
    """The aware datetime of epoch milliseconds."""
    return datetime.fromtimestamp(ms / 1000, UTC)


def commit_to_doc(commit: Commit) -> Doc:
    """The document one insert stores: the history and the commit's live work."""
    doc: Doc = {
        "_id": commit.id,
        "saga_id": commit.saga_id,
        "saga_name": commit.saga_name,
        "saga_version": commit.saga_version,
        "version": commit.version,
        "causation_id": commit.causation_id,
        "events": [e.to_doc() for e in commit.events],
        "outbox": [o.to_doc() for o in commit.outbox],
        "created_at": commit.created_at,
        "status": commit.status,
        "meta": commit.meta,
    }
    for mark in ("starts", "ends"):  # sagas in flight per version: started minus ended
        if getattr(commit, mark):
            doc[mark] = 1
    if commit.outbox:
        doc[OUTBOX_AT] = to_ms(commit.created_at)
    if commit.deadline is not None:
        doc[DEADLINE_AT] = to_ms(commit.deadline)
    if commit.status in TERMINAL:
        doc[FINISHED_AT] = to_ms(commit.created_at)
    return doc


def outbox_trace(doc: Doc) -> dict[str, str]:
    """The trace context stored with a commit document's outbox (empty if none)."""
    return next((dict(o["trace"]) for o in doc.get("outbox") or () if o.get("trace")), {})


def commit_from_doc(doc: Doc) -> Commit:
    """A stored commit (of either shape)."""
    deadline = doc.get("deadline")
    if doc.get(DEADLINE_AT) is not None:
        deadline = from_ms(doc[DEADLINE_AT])
    return Commit(
        saga_id=doc["saga_id"],
        saga_name=doc.get("saga_name") or "",
        saga_version=int(doc.get("saga_version") or 1),
        starts=bool(doc.get("starts")),
        ends=bool(doc.get("ends")),
        version=doc["version"],
        causation_id=doc["causation_id"],
        events=tuple(SagaEvent.from_doc(e) for e in doc["events"]),
        outbox=tuple(OutboxEntry.from_doc(o) for o in doc.get("outbox", [])),
        created_at=doc["created_at"],
        deadline=deadline,
        status=doc.get("status"),
        meta=doc.get("meta") or {},
    )
