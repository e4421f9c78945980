"""Dead letters with AMQP byte-array headers can be shown (JSON) and discarded (BSON)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import bson

from orchestrator.ops.letters import discard_record, read_dead_letter
from orchestrator.settings import Settings


@dataclass
class RawMessage:
    """The attributes of an incoming message that reading a dead letter uses."""

    body: bytes
    headers: dict[str, Any] = field(default_factory=dict)
    message_id: str | None = "m-1"
    correlation_id: str | None = "s-1"
    type: str | None = "payment.authorize_payment.v1"
    reply_to: str | None = None
    app_id: str | None = None
    timestamp: datetime | None = None


def test_byte_array_headers_are_shown_as_text_and_stored_with_a_discard() -> None:
    """pamqp decodes an AMQP byte array ('x') as a bytearray: it is made text like bytes,
    so the API can return it as JSON and a discard can store it in MongoDB."""
    work = Settings().topology().work_queues[0]
    raw = RawMessage(
        body=b"{not json",
        headers={"x-bytes": bytearray(b"\xff\x00"), "x-text": bytearray(b"ok"), "n": 1},
    )
    letter = read_dead_letter(work, cast("Any", raw))

    assert letter.headers == {"x-bytes": "/wA=", "x-text": "ok", "n": 1}
    json.dumps(letter.to_dict())
    record = discard_record(letter, "poison", "test")
    record["discarded_at"] = datetime.now(UTC)
    assert bson.decode(bson.encode(record))["headers"]["x-bytes"] == "/wA="
