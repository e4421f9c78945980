"""Dead letters as operators see them: queues, decoded messages, selectors and reports.

Nothing here touches the broker or the store; :mod:`orchestrator.ops.dlq` does.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from contracts import MalformedMessage, decode
from orchestrator.errors import OrchestratorError

if TYPE_CHECKING:
    from aio_pika.abc import AbstractIncomingMessage

    from orchestrator.messaging.topology import Topology, WorkQueue

__all__ = [
    "EVERYTHING",
    "BodyFormat",
    "DeadLetter",
    "DeadLetterQueue",
    "DlqBusy",
    "DlqError",
    "DlqReport",
    "Outcome",
    "OutcomeStatus",
    "Selector",
    "UnknownQueue",
    "broker_death_text",
    "discard_record",
    "outcome",
    "read_dead_letter",
    "resolve_queue",
]

BodyFormat = Literal["json", "text", "base64"]


class DlqError(OrchestratorError):
    """A dead-letter operation cannot be done as asked; the message says why."""


class DlqBusy(DlqError):
    """Another operation (a replay, a discard or a listing) holds this dead-letter queue;
    try again when it is done."""


class UnknownQueue(DlqError):
    """The name designates no dead-letter queue of this deployment."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"no dead-letter queue {name!r}; known: {', '.join(known)}")
        self.name = name
        self.known = known


@dataclass(frozen=True, kw_only=True)
class DeadLetterQueue:
    """A dead-letter queue, the work queue it belongs to and its depth."""

    name: str
    work_queue: str
    purpose: str
    messages: int


@dataclass(frozen=True, kw_only=True)
class DeadLetter:
    """A dead-lettered message as an operator sees it (nothing here can alter it)."""

    queue: str
    message_id: str | None
    correlation_id: str | None
    """The saga id."""
    type: str | None
    reply_to: str | None
    app_id: str | None
    timestamp: datetime | None
    headers: dict[str, Any]
    """Headers with AMQP values made JSON-friendly (bytes as text, times as ISO 8601)."""
    body: bytes
    body_format: BodyFormat
    body_text: str
    """The body for reading: indented JSON, plain text, or base64 (see ``body_note``)."""
    body_json: Any = None
    problem: str | None = None
    """Why the body does not decode against its contract, or None if it does."""

    @property
    def saga_id(self) -> str | None:
        """The saga the message belongs to (its correlation id)."""
        return self.correlation_id

    @property
    def reason(self) -> str:
        """Why it was dead-lettered: ``x-error-reason``, else what the broker recorded when
        it dead-lettered the message itself (``broker:delivery_limit``, ``broker:rejected``)."""
        if reason := self.headers.get("x-error-reason"):
            return str(reason)
        if death := self.death:
            return f"broker:{death.get('reason', 'unknown')}"
        if reason := self.headers.get("x-first-death-reason"):
            return f"broker:{reason}"
        return "unknown"

    @property
    def death(self) -> dict[str, Any] | None:
        """The broker's most recent ``x-death`` record, if the broker dead-lettered it."""
        deaths = self.headers.get("x-death")
        if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
            return deaths[0]
        return None

    @property
    def reason_text(self) -> str:
        """The reason in words, for the messages the broker dead-lettered itself (they
        carry ``x-death`` and no ``x-error-*`` headers) as well as the consumer's."""
        if self.headers.get("x-error-reason"):
            message = self.headers.get("x-error-message")
            return f"{self.reason}: {message}" if message else self.reason
        death = self.death
        if death is None:
            return "no reason recorded (no x-error-reason and no x-death header)"
        return broker_death_text(death)

    @property
    def body_note(self) -> str:
        """How the body is shown, when it is not JSON."""
        return {"json": "", "text": "not JSON", "base64": "not UTF-8 text"}[self.body_format]

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-serialisable (for the API and ``--json`` output)."""
        return {
            "queue": self.queue,
            "message_id": self.message_id,
            "saga_id": self.correlation_id,
            "type": self.type,
            "reply_to": self.reply_to,
            "app_id": self.app_id,
            "timestamp": self.timestamp.isoformat() if self.timestamp else None,
            "reason": self.reason,
            "reason_text": self.reason_text,
            "headers": self.headers,
            "body": self.body_json if self.body_format == "json" else self.body_text,
            "body_format": self.body_format,
            "valid": self.problem is None,
            "problem": self.problem,
        }


@dataclass(frozen=True, kw_only=True)
class Selector:
    """Which messages an operation takes: every given criterion must hold, or
    ``everything``. One of the two is required, so "all" is never an accident."""

    everything: bool = False
    message_id: str | None = None
    saga_id: str | None = None
    type: str | None = None
    reason: str | None = None
    """``x-error-reason``, e.g. ``retries_exhausted`` or ``schema_violation``."""

    def __post_init__(self) -> None:
        if self.everything == bool(self._criteria()):
            raise DlqError(
                "select the messages: everything, or by message id, saga id, type or "
                "error reason (not both)"
            )

    def _criteria(self) -> dict[str, str]:
        given = {
            "message_id": self.message_id,
            "saga_id": self.saga_id,
            "type": self.type,
            "reason": self.reason,
        }
        return {k: v for k, v in given.items() if v is not None}

    def matches(self, letter: DeadLetter) -> bool:
        """Whether ``letter`` is selected."""
        return all(getattr(letter, name) == wanted for name, wanted in self._criteria().items())

    def __str__(self) -> str:
        if self.everything:
            return "every message"
        return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in self._criteria().items())


EVERYTHING = Selector(everything=True)

OutcomeStatus = Literal["done", "would", "failed"]


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What happened to one selected message: done, would be done (dry run), or failed
    (it is still in the dead-letter queue; ``detail`` says why)."""

    message_id: str | None
    saga_id: str | None
    type: str | None
    status: OutcomeStatus
    detail: str = ""


@dataclass(kw_only=True)
class DlqReport:
    """The result of a replay or a discard. The first failure stops an operation, so
    then ``scanned`` is less than ``depth``: the rest was not looked at."""

    action: Literal["replay", "discard"]
    queue: str
    selector: str
    dry_run: bool
    depth: int
    """Messages in the queue when the operation began; later arrivals are left alone."""
    scanned: int = 0
    """Messages looked at, selected or not."""
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, status: OutcomeStatus) -> int:
        """How many selected messages ended with ``status``."""
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def ok(self) -> bool:
        """Nothing failed: every selected message was handled (or would be, in a dry run)."""
        return all(o.status != "failed" for o in self.outcomes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable (for the API)."""
        return {
            "action": self.action,
            "queue": self.queue,
            "selector": self.selector,
            "dry_run": self.dry_run,
            "depth": self.depth,
            "scanned": self.scanned,
            "ok": self.ok,
            "outcomes": [vars(o) for o in self.outcomes],
        }


BROKER_REASONS = {
    "delivery_limit": "delivered {count} time(s) without an ack, past the quorum queue's "
    "delivery limit: a consumer crashed or was cut off while holding it (a crash loop "
    "parks innocent messages too)",
    "rejected": "rejected without requeue by a consumer",
    "expired": "its time to live expired before it was consumed",
    "maxlen": "the queue was over its length limit",
}


def broker_death_text(death: Mapping[str, Any]) -> str:
    """Words for one ``x-death`` record (the broker dead-lettered the message itself)."""
    reason = str(death.get("reason", "unknown"))
    count = death.get("count", 1)
    what = BROKER_REASONS.get(reason, f"dead-lettered for the reason {reason!r}").format(
        count=count
    )
    keys = death.get("routing-keys") or []
    source = f"{death.get('exchange') or '(default exchange)'} / {', '.join(map(str, keys))}"
    return (
        f"the broker dead-lettered it from {death.get('queue', '?')} at "
        f"{death.get('time', '?')}: {what} (published to {source})"
    )


def resolve_queue(topology: Topology, name: str) -> WorkQueue:
    """The work queue whose dead-letter queue ``name`` designates. Accepted: the full
    name (``saga.payment.commands.dlq``), the work queue's, or either without the
    namespace (``payment.commands``)."""
    wanted = name.strip().removesuffix(".dlq")
    for q in topology.work_queues:
        if wanted in (q.name, q.name.removeprefix(f"{topology.namespace}.")):
            return q
    raise UnknownQueue(name, [q.dlq for q in topology.work_queues])


def read_dead_letter(work: WorkQueue, raw: AbstractIncomingMessage) -> DeadLetter:
    """A message taken from ``work``'s dead-letter queue, decoded for reading."""
    body_format, text, value = _body(raw.body)
    return DeadLetter(
        queue=work.dlq,
        message_id=raw.message_id,
        correlation_id=raw.correlation_id,
        type=raw.type,
        reply_to=raw.reply_to,
        app_id=raw.app_id,
        timestamp=raw.timestamp,
        headers={str(k): _plain(v) for k, v in (raw.headers or {}).items()},
        body=raw.body,
        body_format=body_format,
        body_text=text,
        body_json=value,
        problem=_problem(raw.type, raw.body),
    )


MAX_JSON_DEPTH = 100
"""A body nested deeper than this is shown as text: readers and JSON encoders of API
responses recurse once per level, and the consumer parks such bodies anyway."""


def _body(body: bytes) -> tuple[BodyFormat, str, Any]:
    """How to show a body: indented JSON, text, or base64. Never raises: these are the
    very messages the consumer could not read (bad UTF-8, absurd nesting that makes the
    JSON reader recurse too deep, numbers longer than Python converts)."""
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return "base64", base64.b64encode(body).decode(), None
    try:
        value = json.loads(text)
        if _depth(value) > MAX_JSON_DEPTH:
            return "text", text, None
        shown = json.dumps(value, indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):  # ValueError covers JSONDecodeError and big ints
        return "text", text, None
    return "json", shown, value


def _depth(value: Any) -> int:
    """Nesting depth of decoded JSON, without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            if level <= MAX_JSON_DEPTH:
                stack.extend((x, level + 1) for x in item)
    return deepest


def _problem(type_name: str | None, body: bytes) -> str | None:
    try:
        decode(type_name, body)
    except MalformedMessage as e:
        return str(e)
    except Exception as e:  # anything a contract's validator raises is a problem too
        return f"undecodable: {type(e).__name__}: {str(e)[:200]}"
    return None


def _plain(value: Any) -> Any:
    """An AMQP header value as a JSON- and BSON-friendly one (a byte array, which pamqp
    reads as a bytearray, like bytes)."""
    if isinstance(value, bytes | bytearray):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return base64.b64encode(value).decode()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def outcome(letter: DeadLetter, status: OutcomeStatus, detail: str = "") -> Outcome:
    """What happened to ``letter``."""
    return Outcome(
        message_id=letter.message_id,
        saga_id=letter.correlation_id,
        type=letter.type,
        status=status,
        detail=detail,
    )


def discard_record(letter: DeadLetter, reason: str, actor: str) -> dict[str, Any]:
    """What ``dlq_discards`` keeps of a discarded message: enough to send it again."""
    return {
        "_id": uuid.uuid4().hex,
        "queue": letter.queue,
        "message_id": letter.message_id,
        "saga_id": letter.correlation_id,
        "type": letter.type,
        "error_reason": letter.reason,
        "headers": letter.headers,
        "body": letter.body,
        "body_text": letter.body_text,
        "body_format": letter.body_format,
        "reason": reason,
        "actor": actor,
        "discarded_at": datetime.now(UTC),
    }
