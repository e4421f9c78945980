"""docs/event-store.md describes every field, event type and index the store writes."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator.saga.commits import Commit, OutboxEntry
from orchestrator.saga.state import EventType, SagaEvent
from orchestrator.store.mongo import MongoSagaStore
from orchestrator.store.shape import commit_to_doc as _to_doc

LIVE_WORK = (
    "deadline_at",
    "finished_at",
    "outbox_attempts",
    "outbox_error",
    "deadline_attempts",
    "deadline_error",
    "parked_at",
    "outbox_parked",
    "deadline_parked",
)
"""Fields a commit gains or loses while its work is pending (not in a fresh commit)."""
DOC = (Path(__file__).resolve().parents[2] / "docs" / "event-store.md").read_text()


def _table(heading: str) -> list[str]:
    """First-column names (in backticks) of the first table after ``heading``."""
    table = DOC[DOC.index(heading) :].split("\n\n|", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"^\| `([^`]+)` \|", table, re.M)


def _commit() -> Commit:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    return Commit(
        saga_id="s",
        saga_name="travel",
        version=1,
        causation_id="m",
        events=(SagaEvent(type=EventType.SAGA_STARTED, at=now),),
        outbox=(
            OutboxEntry(
                kind="event",
                type="t.x.v1",
                body={},
                message_id="i",
                routing_key="k",
                trace={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
            ),
        ),
        created_at=now,
    )


def test_every_field_of_a_commit_document_is_described() -> None:
    doc = _to_doc(_commit())
    described = _table("## Fields")

    assert list(doc) == [f for f in described if f in doc], "in the order the store writes"
    assert set(LIVE_WORK) <= set(described) - set(doc)
    assert _table("### `events[]`") == list(doc["events"][0])
    assert _table("### `outbox[]`") == list(doc["outbox"][0])


def test_every_event_type_is_described() -> None:
    table = DOC[DOC.index("| `type` | `data` |") :].split("\n\n", 1)[0]
    described = re.findall(r"^\| `([a-z_]+)` \| ", table, re.M)[1:]  # below the header

    assert described == [t.value for t in EventType]


class _Recorder:
    def __init__(self) -> None:
        self.indexes: list[tuple[str, list[tuple[str, int]], bool]] = []

    async def create_index(self, keys: list[tuple[str, int]], **options: Any) -> None:
        self.indexes.append((options["name"], keys, bool(options.get("unique"))))

    async def index_information(self) -> dict[str, Any]:
        """No index of the previous shape: nothing to convert."""
        return {}


async def test_every_index_is_described() -> None:
    store = MongoSagaStore.__new__(MongoSagaStore)
    recorder = _Recorder()
    store.commits = recorder  # type: ignore[assignment]
    await store.ensure_indexes()

    rows = re.findall(r"^\| `(\w+)` \| `\{([^}]*)\}` \| (unique)? *\|", DOC, re.M)
    described = [
        (name, [(k, int(v)) for k, v in re.findall(r"(\w+): (-?1)", keys)], bool(unique))
        for name, keys, unique in rows
    ]
    assert described == recorder.indexes
