"""Between AMQP messages and contracts: ids in properties, causation and retries in headers."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aio_pika

from contracts import MalformedMessage, Message, decode, encode
from orchestrator.observability import tracing

if TYPE_CHECKING:
    from aio_pika.abc import AbstractIncomingMessage

__all__ = [
    "ATTEMPT",
    "CAUSATION_ID",
    "HANDLER_ATTEMPTS",
    "SAGA_ID_PATTERN",
    "SAGA_VERSION",
    "Envelope",
    "build_message",
    "copy_message",
    "header_int",
    "read_envelope",
]

CAUSATION_ID = "x-causation-id"
ATTEMPT = "x-attempt"
"""Delivery attempt of this copy (1 for the first), set by the retry tiers."""
SAGA_VERSION = "x-saga-version"
"""On a start command: the version of the saga definition to start (default: newest)."""
HANDLER_ATTEMPTS = "x-handler-attempts"
"""On a reply: how many attempts the participant needed for the command."""

SAGA_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


@dataclass(frozen=True, kw_only=True)
class Envelope:
    """A decoded message with the AMQP facts handlers need."""

    message: Message
    message_id: str
    correlation_id: str
    causation_id: str | None = None
    reply_to: str | None = None
    attempt: int = 1
    headers: Mapping[str, Any] = field(default_factory=dict)


def read_envelope(raw: AbstractIncomingMessage, *, max_body_bytes: int) -> Envelope:
    """Validate and decode; every problem is a :class:`MalformedMessage` with its reason."""
    if len(raw.body) > max_body_bytes:
        raise MalformedMessage(
            "too_large", f"body is {len(raw.body)} bytes, the limit is {max_body_bytes}"
        )
    message = decode(raw.type, raw.body)
    if not raw.correlation_id:
        raise MalformedMessage("missing_correlation_id", "correlation_id (the saga id) is not set")
    if not SAGA_ID_PATTERN.match(raw.correlation_id):
        raise MalformedMessage(
            "missing_correlation_id",
            f"correlation_id {raw.correlation_id!r} is not a valid saga id "
            "(1-100 of A-Z a-z 0-9 _ -)",
        )
    if not raw.message_id:
        raise MalformedMessage("schema_violation", "message_id is not set")
    headers = dict(raw.headers or {})
    causation = headers.get(CAUSATION_ID)
    return Envelope(
        message=message,
        message_id=raw.message_id,
        correlation_id=raw.correlation_id,
        causation_id=_text(causation),
        reply_to=raw.reply_to,
        attempt=max(1, header_int(headers.get(ATTEMPT), 1)),
        headers=headers,
    )


def build_message(
    message: Message,
    *,
    message_id: str,
    correlation_id: str,
    causation_id: str | None = None,
    reply_to: str | None = None,
    app_id: str | None = None,
    headers: Mapping[str, Any] | None = None,
) -> aio_pika.Message:
    """A persistent AMQP message for a contract."""
    all_headers: dict[str, Any] = dict(headers or {})
    if causation_id:
        all_headers[CAUSATION_ID] = causation_id
    tracing.inject(all_headers)  # tracing: W3C trace context of the current span, if on
    return aio_pika.Message(
        encode(message),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message_id,
        correlation_id=correlation_id,
        type=message.TYPE,
        reply_to=reply_to,
        app_id=app_id,
        timestamp=datetime.now(UTC),
        headers=all_headers,
    )


def copy_message(raw: AbstractIncomingMessage, *, headers: dict[str, Any]) -> aio_pika.Message:
    """A persistent copy of a delivered message (same ids, type and body) with ``headers``:
    what retry tiers, dead-letter queues and replays publish."""
    return aio_pika.Message(
        raw.body,
        headers=headers,
        content_type=raw.content_type,
        content_encoding=raw.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=raw.priority,
        correlation_id=raw.correlation_id,
        reply_to=raw.reply_to,
        message_id=raw.message_id,
        timestamp=raw.timestamp,
        type=raw.type,
        app_id=raw.app_id,
    )


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return None if value is None else str(value)


def header_int(value: Any, default: int) -> int:
    """A header value as an int, or ``default`` if it is missing or not a number."""
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return default
