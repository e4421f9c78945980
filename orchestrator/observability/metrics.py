"""The Prometheus metrics every service records, with ``prometheus_client``.

Everything here is counted in memory where the work happens (the consumer, the saga
runtime, the outbox relay, the deadline watcher, the broker connection), so a scrape
reads the process's registry and nothing else: its cost does not grow with the number
of sagas, and it never queries the store. :mod:`orchestrator.observability.probes`
serves them on ``SAGA_METRICS_PORT`` beside ``/health`` and ``/ready``.

Names, labels and what they count:

* ``saga_handler_duration_seconds{queue,outcome}``: one work-queue message, from the
  handler's start to its settlement; outcome ``ack``, ``duplicate`` (the orchestrator
  had processed it already), ``retry``, ``deferred`` or ``dead_letter``;
* ``saga_messages_retried_total{queue,reason}`` (reason: the error's type),
  ``saga_messages_dead_lettered_total{queue,reason}`` (reason: ``x-error-reason``) and
  ``saga_messages_malformed_total{queue,reason}`` (the dead-lettered that could not be
  read or were refused as bad input; everything but ``retries_exhausted``). They count
  copies sent on; one whose copy the broker refused is requeued and counted again;
* ``saga_outbox_backlog`` and ``saga_outbox_oldest_age_seconds``: outboxes the relay
  found overdue in its last pass and left unpublished (at most its batch size), and the
  age of the oldest pending outbox it saw;
* ``saga_deadline_lag_seconds``: how late a passed step deadline was handled;
* ``saga_version_conflicts_total{saga}`` and ``saga_stale_cache_reloads_total{saga}``;
* ``saga_consumer_reconnects_total{connection}``: the broker connection came back;
* ``saga_outcomes_total{saga,outcome}``, ``saga_duration_seconds{saga,outcome}``,
  ``saga_parked_total{saga}`` and ``saga_step_duration_seconds{saga,step,outcome}``
  (command sent to reply stored; outcome ``succeeded``, ``failed``, ``timed_out`` or
  ``compensated``), recorded by the runtime when it stores the commit.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from orchestrator.saga.state import SagaEvent, SagaState

__all__ = [
    "REGISTRY",
    "Handling",
    "dead_lettered",
    "handling",
    "mark_duplicate",
    "note_outcome",
    "observe_commit",
    "observe_deadline",
    "outbox_backlog",
    "outbox_oldest",
    "retried",
    "stale_reload",
    "version_conflict",
    "watch_reconnects",
]

FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SLOW = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 86400.0)
RETRIES_EXHAUSTED = "retries_exhausted"

HANDLER_DURATION = Histogram(
    "saga_handler_duration_seconds",
    "Handling of one work-queue message, to its settlement, by queue and outcome.",
    ["queue", "outcome"],
    buckets=FAST,
)
RETRIED = Counter(
    "saga_messages_retried",
    "Messages sent to a retry tier, by queue and error type.",
    ["queue", "reason"],
)
DEAD_LETTERED = Counter(
    "saga_messages_dead_lettered",
    "Messages parked in a dead-letter queue, by queue and reason.",
    ["queue", "reason"],
)
MALFORMED = Counter(
    "saga_messages_malformed",
    "Messages dead-lettered as unreadable or bad input, by queue and reason.",
    ["queue", "reason"],
)
OUTBOX_BACKLOG = Gauge(
    "saga_outbox_backlog",
    "Outboxes the relay found overdue in its last pass and left unpublished "
    "(at most its batch size).",
)
OUTBOX_OLDEST_AGE = Gauge(
    "saga_outbox_oldest_age_seconds", "Age of the oldest pending outbox the relay last saw."
)
DEADLINE_LAG = Histogram(
    "saga_deadline_lag_seconds", "How late a passed step deadline was handled.", buckets=SLOW
)
VERSION_CONFLICTS = Counter(
    "saga_version_conflicts",
    "Appends that lost to another writer and were decided again.",
    ["saga"],
)
STALE_RELOADS = Counter(
    "saga_stale_cache_reloads",
    "Cached saga states reloaded from the store before ignoring.",
    ["saga"],
)
RECONNECTS = Counter(
    "saga_consumer_reconnects",
    "Times a service's broker connection was restored.",
    ["connection"],
)
SAGA_OUTCOMES = Counter("saga_outcomes", "Sagas ended, by saga and outcome.", ["saga", "outcome"])
SAGA_DURATION = Histogram(
    "saga_duration_seconds", "Start to end of ended sagas.", ["saga", "outcome"], buckets=SLOW
)
SAGAS_PARKED = Counter("saga_parked", "Sagas parked for an operator.", ["saga"])
STEP_DURATION = Histogram(
    "saga_step_duration_seconds",
    "A step's command first sent to its reply stored, by saga, step and outcome.",
    ["saga", "step", "outcome"],
    buckets=SLOW,
)

STEP_OUTCOMES = {
    "step_succeeded": "succeeded",
    "step_failed": "failed",
    "step_timed_out": "timed_out",
    "step_compensated": "compensated",
}


@dataclass
class Handling:
    """How the message in hand was settled (``ack`` unless told otherwise)."""

    outcome: str = "ack"


_handling: ContextVar[Handling | None] = ContextVar("saga_handling", default=None)


@contextmanager
def handling(queue: str) -> Iterator[Handling]:
    """Time one message's handler and settlement; the outcome is what the consumer (or
    the handler, for a duplicate) noted meanwhile."""
    note = Handling()
    token = _handling.set(note)
    start = time.perf_counter()
    try:
        yield note
    finally:
        _handling.reset(token)
        HANDLER_DURATION.labels(queue, note.outcome).observe(time.perf_counter() - start)


def note_outcome(outcome: str) -> None:
    """Say how the message in hand is settled (no-op outside :func:`handling`)."""
    note = _handling.get()
    if note is not None:
        note.outcome = outcome


def mark_duplicate() -> None:
    """The message in hand had been processed already: it is acked without effect."""
    note_outcome("duplicate")


def retried(queue: str, error: BaseException) -> None:
    """A copy goes to a retry tier."""
    RETRIED.labels(queue, type(error).__name__).inc()
    note_outcome("retry")


def dead_lettered(queue: str, reason: str) -> None:
    """A copy goes to the dead-letter queue with ``reason``."""
    DEAD_LETTERED.labels(queue, reason).inc()
    if reason != RETRIES_EXHAUSTED:
        MALFORMED.labels(queue, reason).inc()
    note_outcome("dead_letter")


def outbox_backlog(left: int) -> None:
    """Overdue outboxes the relay's pass found and could not publish."""
    OUTBOX_BACKLOG.set(left)


def outbox_oldest(now: datetime, oldest: datetime | None) -> None:
    """When the oldest pending outbox the relay saw was stored (None: none pending)."""
    OUTBOX_OLDEST_AGE.set(0 if oldest is None else max(_seconds(now, oldest), 0.0))


def observe_deadline(*, now: datetime, deadline: datetime) -> None:
    """A passed deadline is handled ``now``."""
    DEADLINE_LAG.observe(max(_seconds(now, deadline), 0.0))


def version_conflict(saga: str) -> None:
    """An append lost to another writer."""
    VERSION_CONFLICTS.labels(saga or "unknown").inc()


def stale_reload(saga: str) -> None:
    """A cached state is reloaded before a message is ignored."""
    STALE_RELOADS.labels(saga or "unknown").inc()


def observe_commit(before: SagaState, after: SagaState, events: Sequence[SagaEvent]) -> None:
    """A commit was stored: the steps it ended, and the saga's outcome if it ended it."""
    name = after.saga_name or "unknown"
    for event in events:
        outcome = STEP_OUTCOMES.get(event.type.value)
        sent = before.pending(event.step) if outcome and event.step else None
        if sent is not None and sent.sent_at is not None and outcome and event.step:
            STEP_DURATION.labels(name, event.step, outcome).observe(
                max(_seconds(event.at, sent.sent_at), 0.0)
            )
    status, was = after.status, before.status
    if status is None or status == was:
        return
    if status.terminal and not (was is not None and was.terminal):
        SAGA_OUTCOMES.labels(name, status.value).inc()
        if after.started_at is not None and after.updated_at is not None:
            seconds = _seconds(after.updated_at, after.started_at)
            SAGA_DURATION.labels(name, status.value).observe(max(seconds, 0.0))
    elif status.parked and not (was is not None and was.parked):
        SAGAS_PARKED.labels(name).inc()


def watch_reconnects(connection: Any, name: str) -> None:
    """Count every time the robust ``connection`` (aio-pika) is restored."""
    callbacks = getattr(connection, "reconnect_callbacks", None)
    if callbacks is not None:
        callbacks.add(lambda *_: RECONNECTS.labels(name).inc())
    RECONNECTS.labels(name)  # present at 0 from the start, so rate() sees the first one


def _seconds(later: datetime, earlier: datetime) -> float:
    return (_aware(later) - _aware(earlier)).total_seconds()


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
