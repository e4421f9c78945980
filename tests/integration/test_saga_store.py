"""The MongoDB saga store on the real embedded server: group commit outcomes, live-only
work fields, parking, and commits of the previous shape."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import ASCENDING

from contracts import MalformedMessage
from orchestrator.errors import ConcurrencyConflict, DuplicateMessage
from orchestrator.saga.commits import Commit, OutboxEntry
from orchestrator.saga.state import EventType, SagaEvent
from orchestrator.settings import Settings
from orchestrator.store.connect import connect_mongo
from orchestrator.store.legacy import migrate_legacy
from orchestrator.store.mongo import MongoSagaStore

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
LIVE_FIELDS = ("outbox_at", "deadline_at", "parked_at")


def started(saga_id: str, *, at: datetime = NOW) -> SagaEvent:
    return SagaEvent(
        type=EventType.SAGA_STARTED,
        at=at,
        data={"saga_name": "order_fulfilment", "start": {"n": 1}, "saga_id": saga_id},
    )


def commit(
    saga_id: str,
    version: int = 1,
    *,
    causation: str | None = None,
    outbox: int = 1,
    deadline: datetime | None = None,
    status: str | None = "running",
    created_at: datetime = NOW,
    body: dict[str, Any] | None = None,
) -> Commit:
    entries = tuple(
        OutboxEntry(
            kind="command",
            type="inventory.reserve_stock.v1",
            body=body or {"n": i},
            message_id=f"{saga_id}:{version}:{i}",
            routing_key="inventory.reserve_stock",
        )
        for i in range(outbox)
    )
    return Commit(
        saga_id=saga_id,
        saga_name="order_fulfilment",
        version=version,
        causation_id=causation or f"{saga_id}:m{version}",
        events=(started(saga_id),) if version == 1 else (),
        outbox=entries,
        created_at=created_at,
        deadline=deadline,
        status=status,
    )


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[MongoSagaStore]:
    client = await connect_mongo(settings.require_mongodb_url(), app_name="test-store")
    store = MongoSagaStore(database=client[settings.database])
    await store.ensure_indexes()
    yield store
    await client.close()


async def test_a_batch_with_a_duplicate_a_conflict_and_bad_input_fails_only_those(
    store: MongoSagaStore,
) -> None:
    """One insert_many: the good commits are stored; the redelivered message is a
    DuplicateMessage, the taken version a ConcurrencyConflict, the number BSON cannot
    hold a MalformedMessage; nothing else is affected."""
    await store.append(commit("dup"))
    await store.append(commit("taken"))
    batch = [
        commit("good-1"),
        commit("dup"),  # same version and same causing message: a redelivery
        commit("taken", causation="another-message"),  # version 1 taken by someone else
        commit("huge", body={"amount": 10**30}),
        commit("good-2"),
    ]
    outcomes = await store.append_many(batch)
    assert outcomes[0] is None
    assert outcomes[4] is None
    assert isinstance(outcomes[1], DuplicateMessage)
    assert isinstance(outcomes[2], ConcurrencyConflict)
    assert isinstance(outcomes[3], MalformedMessage)
    for saga_id in ("good-1", "good-2", "dup", "taken"):
        assert [c.version for c in await store.history(saga_id)] == [1]
    assert await store.history("huge") == []
    assert (await store.history("taken"))[0].causation_id == "taken:m1", "not overwritten"


async def test_live_fields_exist_only_while_there_is_work(store: MongoSagaStore) -> None:
    """The outbox is pending until flagged, the deadline armed until superseded; a
    finished commit carries only finished_at; nothing of it is left once done."""
    deadline = NOW + timedelta(seconds=30)
    await store.append(commit("s", 1, deadline=deadline))
    await store.append(commit("s", 2, status="completed", outbox=1))
    docs = {d["_id"]: d for d in await store.commits.find({"saga_id": "s"}).to_list()}
    assert docs["s:1"]["deadline_at"] == int(deadline.timestamp() * 1000)
    assert "outbox_at" in docs["s:1"]
    assert "outbox_at" in docs["s:2"]
    assert "finished_at" in docs["s:2"]
    assert "finished_at" not in docs["s:1"]
    assert "dispatched" not in docs["s:1"]
    assert "deadline" not in docs["s:1"]
    work = await store.live_work()
    assert (work.pending_outbox, work.active_deadlines) == (2, 1)

    await store.mark_dispatched(["s:1", "s:2"])
    await store.clear_deadlines(["s:1"])
    for doc in await store.commits.find({"saga_id": "s"}).to_list():
        assert not set(LIVE_FIELDS) & set(doc), doc
    work = await store.live_work()
    assert (work.pending_outbox, work.active_deadlines) == (0, 0)
    assert await store.next_undispatched() is None
    assert await store.next_deadline() is None


async def test_due_deadlines_are_live_until_the_saga_moves_on(store: MongoSagaStore) -> None:
    past = NOW - timedelta(seconds=1)
    await store.append(commit("a", 1, deadline=past))
    await store.append(commit("b", 1, deadline=past))
    await store.append(commit("b", 2, deadline=NOW + timedelta(hours=1)))
    due = {d.commit_id: d.live for d in await store.due_deadlines(now=NOW, limit=10)}
    assert due == {"a:1": True, "b:1": False}
    assert await store.due_deadlines(now=NOW, limit=10, saga_names=["other"]) == []
    assert await store.next_deadline() == past


async def test_failing_work_is_deferred_then_parked_then_retried_or_dropped(
    store: MongoSagaStore,
) -> None:
    """Deferral moves an outbox out of the way; parking takes it out of the relay's
    sight with the reason; retry makes it pending again, drop forgets it."""
    old = NOW - timedelta(minutes=1)
    await store.append(commit("bad", 1, created_at=old, deadline=old))
    await store.append(commit("good", 1, created_at=old))
    await store.defer_outbox("bad:1", until=NOW + timedelta(minutes=5), attempts=1, error="x")
    pending = await store.undispatched(older_than=NOW, limit=1)
    assert [p.commit.id for p in pending] == ["good:1"], "the deferred one waits behind"

    await store.park_outbox("bad:1", reason="Unroutable: no queue", attempts=8)
    await store.park_deadline("bad:1", reason="KeyError: 'x'", attempts=5)
    assert [p.commit.id for p in await store.undispatched(older_than=NOW, limit=10)] == ["good:1"]
    assert await store.due_deadlines(now=NOW, limit=10) == []
    parked = await store.parked()
    assert {(p.kind, p.commit_id, p.attempts) for p in parked} == {
        ("outbox", "bad:1", 8),
        ("deadline", "bad:1", 5),
    }
    assert next(p for p in parked if p.kind == "outbox").messages == ("inventory.reserve_stock.v1",)
    work = await store.live_work()
    assert (work.parked_outbox, work.parked_deadlines) == (1, 1)

    assert await store.retry_parked("bad:1", now=NOW, kind="outbox") == ["outbox"]
    assert {p.commit.id for p in await store.undispatched(older_than=NOW, limit=10)} == {
        "bad:1",
        "good:1",
    }
    assert await store.drop_parked("bad:1") == ["deadline"]
    assert await store.parked() == []
    doc = await store.commits.find_one({"_id": "bad:1"})
    assert doc is not None
    assert "parked_at" not in doc
    assert "deadline_at" not in doc


async def test_commits_of_the_previous_shape_are_converted_once(store: MongoSagaStore) -> None:
    """Old commits (dispatched/deadline fields, no saga name, the old indexes) get the
    live fields; the old indexes are dropped so that later starts skip the conversion."""
    commits = store.commits
    await commits.create_index(
        [("dispatched", ASCENDING), ("created_at", ASCENDING)], name="outbox_pending"
    )
    await commits.create_index([("deadline", ASCENDING)], name="deadline")
    old = {
        "saga_id": "old",
        "causation_id": "old:start",
        "outbox": [],
        "created_at": NOW,
        "status": "running",
        "meta": {},
    }
    await commits.insert_many(
        [
            {**old, "_id": "old:1", "version": 1, "events": [started("old").to_doc()],
             "dispatched": False, "deadline": NOW},
            {**old, "_id": "done:1", "saga_id": "done", "version": 1, "events": [],
             "dispatched": True, "deadline": None, "status": "completed"},
        ]
    )  # fmt: skip
    assert await migrate_legacy(commits) == 3
    doc = await commits.find_one({"_id": "old:1"})
    assert doc is not None
    assert doc["saga_name"] == "order_fulfilment"
    assert doc["outbox_at"] == doc["deadline_at"] == int(NOW.timestamp() * 1000)
    assert "dispatched" not in doc
    assert "deadline" not in doc
    assert "finished_at" in (await commits.find_one({"_id": "done:1"}) or {})
    assert not {"outbox_pending", "deadline"} & set(await commits.index_information())
    assert await migrate_legacy(commits) == 0
