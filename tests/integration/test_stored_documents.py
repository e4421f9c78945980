"""Documents written by earlier releases still load, relay and time out.

They are inserted as raw dicts in the old shape, the way the previous release stored
them: no ``saga_name`` on the commit (only in its saga's ``saga_started`` event), no
``saga_version`` in that event, and outcome events of type ``saga.<outcome>.v1`` carrying
the order saga's ``order_id``. The real store, relay and broker read them back.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from contracts import (
    AuthorizePayment,
    PlaceOrder,
    ReleaseStock,
    ReserveStock,
    SagaCompleted,
    decode,
)
from orchestrator.messaging.bus import Bus
from orchestrator.packs.order_fulfilment import ORDER_FULFILMENT
from orchestrator.runtime.deadlines import DeadlineWatcher
from orchestrator.runtime.engine import SagaRuntime, utcnow
from orchestrator.runtime.outbox import AmqpOutboxPublisher, Dispatcher, OutboxRelay
from orchestrator.saga.state import EventType, Status
from orchestrator.settings import Settings
from orchestrator.store.connect import connect_mongo
from orchestrator.store.legacy import LEGACY_INDEXES
from orchestrator.store.mongo import MongoSagaStore
from orchestrator.testing import InMemoryOutboxPublisher, SagaTestKit, no_reply, refuse
from tests.rabbit import take_all

pytestmark = pytest.mark.integration

LONG_AGO = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
ORDER = {
    "order_id": "order-1",
    "customer_id": "customer-1",
    "lines": [{"sku": "apple", "quantity": 2}],
    "amount_cents": 1_000,
    "currency": "EUR",
    "ship_to": "1 Main Street",
}


def _event(kind: str, step: str | None = None, **data: Any) -> dict[str, Any]:
    return {"type": kind, "at": LONG_AGO, "step": step, "attempt": 1, "data": data}


def _old_commit(
    saga_id: str,
    version: int,
    events: list[dict[str, Any]],
    outbox: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A commit document as the previous release wrote it (no ``saga_name``)."""
    outbox = outbox or []
    return {
        "_id": f"{saga_id}:{version}",
        "saga_id": saga_id,
        "version": version,
        "causation_id": f"{saga_id}:msg-{version}",
        "events": events,
        "outbox": outbox,
        "dispatched": not outbox,
        "created_at": LONG_AGO + timedelta(seconds=version),
        "deadline": None,
        "status": "running",
        "meta": {},
        **fields,
    }


def _started(saga_id: str, deadline: datetime) -> dict[str, Any]:
    return _old_commit(
        saga_id,
        1,
        [
            _event(
                "saga_started",
                saga_name="order_fulfilment",
                start=ORDER,
                reference="order-1",
                message_id=f"{saga_id}:start",
            ),
            _event("step_started", "reserve_stock", deadline=deadline),
        ],
        deadline=deadline,
    )


def _reserve_stock(saga_id: str) -> dict[str, Any]:
    return {
        "kind": "command",
        "type": "inventory.reserve_stock.v1",
        "body": {"order_id": "order-1", "lines": [{"sku": "apple", "quantity": 2}]},
        "message_id": f"{saga_id}:reserve_stock:do",
        "routing_key": "inventory.reserve_stock",
    }


def _completed_saga(saga_id: str) -> list[dict[str, Any]]:
    """A completed order saga whose outcome event (v1) was never confirmed published."""
    steps = ("reserve_stock", "authorize_payment", "schedule_shipment")
    docs = [_started(saga_id, LONG_AGO)]
    docs[0] |= {"deadline": None}
    for version, (done, following) in enumerate(
        zip(steps, (*steps[1:], None), strict=True), start=2
    ):
        events = [_event("step_succeeded", done)]
        events.append(_event("step_started", following) if following else _event("saga_completed"))
        docs.append(_old_commit(saga_id, version, events))
    outcome = {
        "kind": "event",
        "type": "saga.completed.v1",
        "body": {"saga_name": "order_fulfilment", "order_id": "order-1"},
        "message_id": f"{saga_id}:completed",
        "routing_key": "order_fulfilment.completed",
    }
    docs[-1] |= {"outbox": [outcome], "dispatched": False, "status": "completed"}
    return docs


@pytest.fixture
async def store(settings: Settings) -> Any:
    """The saga store of this test's database, with its raw collection (no index yet)."""
    client = await connect_mongo(settings.require_mongodb_url(), app_name="old-documents")
    yield MongoSagaStore(database=client[settings.database])
    await client.close()


async def previous_release(store: MongoSagaStore, docs: list[dict[str, Any]]) -> None:
    """The database as the previous release left it (its documents and its indexes),
    then this release's store starting on it (which converts the pending work once)."""
    for keys, name in zip(LEGACY_INDEXES, ("outbox_pending", "deadline"), strict=True):
        await store.commits.create_index(list(keys), name=name)
    await store.commits.insert_many(docs)
    await store.ensure_indexes()


@pytest.fixture
async def bus(settings: Settings) -> Any:
    """A connection that declared this test's topology."""
    bus = Bus(url=settings.amqp_url, name=f"{settings.namespace}.old", topology=settings.topology())
    await bus.connect()
    yield bus
    await bus.close()


async def test_old_commits_load_and_read_back(store: MongoSagaStore) -> None:
    await store.commits.insert_many(_completed_saga("s-old"))

    state = await store.load("s-old")
    history = await store.history("s-old")

    assert (state.saga_name, state.saga_version, state.reference) == (
        "order_fulfilment",
        1,
        "order-1",
    )
    assert (state.status, state.version) == (Status.COMPLETED, 4)
    assert state.done == ("reserve_stock", "authorize_payment", "schedule_shipment")
    assert [c.saga_name for c in history] == ["", "", "", ""]  # as stored
    assert history[-1].outbox[0].message() == SagaCompleted(
        saga_name="order_fulfilment", reference="order-1"
    )


async def test_an_old_v1_outcome_is_relayed_as_v2_with_its_reference(
    settings: Settings, store: MongoSagaStore, bus: Bus
) -> None:
    await previous_release(store, _completed_saga("s-old"))
    dispatcher = Dispatcher(store=store, publisher=AmqpOutboxPublisher(bus=bus))
    relay = OutboxRelay(store=store, dispatcher=dispatcher, clock=utcnow, grace=0)

    assert await relay.run_once() == 1
    await dispatcher.flush()

    [message] = await take_all(settings.amqp_url, f"{settings.namespace}.inventory.events")
    assert (message.type, message.correlation_id) == ("saga.completed.v2", "s-old")
    assert decode(message.type, message.body) == SagaCompleted(
        saga_name="order_fulfilment", reference="order-1"
    )
    assert await store.undispatched(older_than=utcnow(), limit=10) == []


async def test_an_old_command_without_a_saga_name_is_relayed_to_its_sagas_reply_queue(
    settings: Settings, store: MongoSagaStore, bus: Bus
) -> None:
    started = _started("s-cmd", deadline=utcnow() + timedelta(hours=1))
    await previous_release(
        store, [started | {"outbox": [_reserve_stock("s-cmd")], "dispatched": False}]
    )
    dispatcher = Dispatcher(store=store, publisher=AmqpOutboxPublisher(bus=bus))
    relay = OutboxRelay(store=store, dispatcher=dispatcher, clock=utcnow, grace=0)

    assert await relay.run_once() == 1

    [message] = await take_all(settings.amqp_url, f"{settings.namespace}.inventory.commands")
    assert (message.reply_to, message.correlation_id) == ("order_fulfilment", "s-cmd")
    assert isinstance(decode(message.type, message.body), ReserveStock)


async def test_a_passed_deadline_of_an_old_commit_fires_for_its_saga(
    settings: Settings, store: MongoSagaStore
) -> None:
    await previous_release(store, [_started("s-late", deadline=utcnow() - timedelta(seconds=1))])
    publisher = InMemoryOutboxPublisher(clock=utcnow)
    runtime = SagaRuntime(
        registry=settings.registry(),
        store=store,
        dispatcher=Dispatcher(store=store, publisher=publisher),
    )
    watcher = DeadlineWatcher(store=store, runtime=runtime, clock=utcnow)

    assert await watcher.run_once() == 1

    history = await store.history("s-late")
    assert [e.type for e in history[-1].events] == [EventType.COMMAND_RESENT]
    assert history[-1].saga_name == "order_fulfilment"
    assert [(m.routing_key, m.saga_id) for m in publisher.sent if m.kind == "command"] == [
        ("inventory.reserve_stock", "s-late")
    ]


async def test_the_queries_of_the_event_store_page_answer(store: MongoSagaStore) -> None:
    # Two order sagas run by the in-memory kit, their commits copied into MongoDB.
    await store.ensure_indexes()
    kit = SagaTestKit(ORDER_FULFILMENT)
    kit.script(AuthorizePayment, refuse("card declined"))
    kit.script(ReleaseStock, no_reply())
    for n in (1, 2):
        await kit.start(PlaceOrder.model_validate(ORDER | {"order_id": f"order-{n}"}))
    await kit.advance_until_idle()  # the release never answers: both sagas are parked
    for saga_id in ("saga-1", "saga-2"):
        for commit in (await kit.saga(saga_id)).history:
            await store.append(commit)
    commits = store.commits

    history = await commits.find({"saga_id": "saga-2"}).sort({"version": 1}).to_list(None)
    by_reference = await commits.find(
        {"version": 1, "events.data.reference": "order-2"}, {"saga_id": 1}
    ).to_list(None)
    current = await (
        await commits.aggregate(
            [
                {"$match": {"saga_name": "order_fulfilment"}},
                {"$sort": {"saga_id": 1, "version": -1}},
                {
                    "$group": {
                        "_id": "$saga_id",
                        "status": {"$first": "$status"},
                        "version": {"$first": "$version"},
                    }
                },
            ]
        )
    ).to_list(None)

    assert [c["version"] for c in history] == list(range(1, len(history) + 1))
    assert [d["saga_id"] for d in by_reference] == ["saga-2"]
    assert sorted((d["_id"], d["status"], d["version"]) for d in current) == [
        ("saga-1", "compensation_failed", len(history)),
        ("saga-2", "compensation_failed", len(history)),
    ]
    pending = await commits.find({"outbox_at": {"$exists": True}}).to_list(None)
    assert len(pending) == len(history) * 2  # every commit of both sends a progress event
