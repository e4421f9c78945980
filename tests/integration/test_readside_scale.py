"""Read-side reads cost O(1) or O(page) however many sagas there were, and the totals
they read stay exact under redelivery, reordering and a crash in the middle of a write."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring

from contracts import AuthorizePayment, InventoryRestocked, ProgressEvent, SagaProgressed
from orchestrator.errors import StoreUnavailable, TransientError
from orchestrator.ops import EVERYTHING, replay
from orchestrator.packs.order_fulfilment.stock import StockLevels, StockProjection
from orchestrator.readside import ReadSideService, SagaAnalytics, SagaSummaries
from orchestrator.saga.state import Status
from orchestrator.settings import Settings
from tests.faults import Broken
from tests.helpers import eventually
from tests.integration.conftest import SystemFactory
from tests.rabbit import depth

pytestmark = pytest.mark.integration

SEEDED = 100_000


class Examined(monitoring.CommandListener):
    """Counts the commands sent and the documents the server sent back."""

    def __init__(self) -> None:
        self.commands: list[str] = []
        self.documents = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.commands.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        cursor = event.reply.get("cursor") or {}
        self.documents += len(cursor.get("firstBatch", [])) + len(cursor.get("nextBatch", []))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        del event

    def reset(self) -> None:
        self.commands.clear()
        self.documents = 0


@pytest.fixture
async def watched(settings: Settings) -> AsyncIterator[tuple[Any, Examined]]:
    """The test's database through a client whose every command is counted."""
    listener = Examined()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        settings.require_mongodb_url(), event_listeners=[listener]
    )
    try:
        yield client[settings.database], listener
    finally:
        await client.close()


def progressed(version: int, *types: tuple[str, str | None], lines: Any = None) -> SagaProgressed:
    """A progress event of an order saga with these (event type, step) pairs."""
    now = datetime.now(UTC)
    return SagaProgressed(
        saga_name="order_fulfilment",
        version=version,
        status="completed" if ("saga_completed", None) in types else "running",
        events=tuple(ProgressEvent(type=t, at=now, step=step) for t, step in types),
        start={"lines": lines or [{"sku": "apple", "quantity": 2}, {"sku": "pear", "quantity": 1}]},
    )


RESERVED = progressed(2, ("step_succeeded", "reserve_stock"))
SHIPPED = progressed(4, ("step_succeeded", "schedule_shipment"), ("saga_completed", None))
RELEASED = progressed(5, ("step_compensated", "reserve_stock"))


def levels(found: dict[str, StockLevels]) -> dict[str, tuple[int, int, int]]:
    return {k: (v.available, v.reserved, v.shipped) for k, v in found.items()}


async def test_a_stock_read_examines_a_bounded_number_of_documents(
    watched: tuple[Any, Examined],
) -> None:
    """With 100,000 saga rows stored, reading one SKU's stock reads one document, and a
    page of SKUs reads a page; the totals are those of the events applied."""
    db, listener = watched
    rows = [
        {
            "_id": f"seeded-{i}",
            "version": 4,
            "state": "shipped",
            "lines": [{"sku": "apple", "quantity": 1}],
        }
        for i in range(SEEDED)
    ]
    for start in range(0, SEEDED, 5000):
        await db["readside_stock_sagas"].insert_many(rows[start : start + 5000], ordered=False)
    projection = StockProjection(database=db)
    await projection.apply_restock(InventoryRestocked(sku="apple", units=10, restock_id="r-1"))
    await projection.apply_restock(InventoryRestocked(sku="pear", units=3, restock_id="r-2"))
    await projection.apply_saga("live-1", RESERVED)
    listener.reset()

    one = await projection.levels(["apple"])
    assert levels(one) == {"apple": (8, 2, 0)}
    assert listener.documents <= 2, listener.commands
    assert len(listener.commands) <= 2, listener.commands

    listener.reset()
    page = await projection.page(limit=1)
    assert [lv.sku for lv in page] == ["apple"]
    assert listener.documents <= 2
    assert [lv.sku for lv in await projection.page(after="apple", limit=10)] == ["pear"]


async def test_totals_stay_exact_under_redelivery_reordering_and_a_crash_midway(
    settings: Settings,
) -> None:
    """Shipped before reserved (reordered), every event twice, a restock twice, and a
    write that dies after the first of two SKUs: the totals equal one application of
    each event, and a rebuild-free redelivery finishes the interrupted movement."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.require_mongodb_url())
    try:
        projection = StockProjection(database=client[settings.database])
        for restock_id in ("r-a", "r-a"):
            await projection.apply_restock(
                InventoryRestocked(sku="apple", units=10, restock_id=restock_id)
            )
        await projection.apply_restock(InventoryRestocked(sku="pear", units=5, restock_id="r-p"))
        # Saga 1: completion arrives before its reservation; both twice.
        for event in (SHIPPED, RESERVED, SHIPPED, RESERVED):
            await projection.apply_saga("saga-1", event)
        # Saga 2: reserved, then released; duplicates in between, concurrently.
        await asyncio.gather(*(projection.apply_saga("saga-2", RESERVED) for _ in range(3)))
        expected = {"apple": (6, 2, 2), "pear": (3, 1, 1)}
        assert levels(await projection.levels(["apple", "pear"])) == expected

        # Saga 2's release dies after moving apple, before pear.
        real = projection.saga_totals._increment
        calls = 0

        async def dies_on_the_second(*args: Any) -> None:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise StoreUnavailable("the store went away mid-movement")
            await real(*args)

        projection.saga_totals._increment = dies_on_the_second  # type: ignore[method-assign]
        with pytest.raises(StoreUnavailable):
            await projection.apply_saga("saga-2", RELEASED)
        projection.saga_totals._increment = real  # type: ignore[method-assign]

        await projection.apply_saga("saga-2", RELEASED)  # the redelivery finishes it
        await projection.apply_saga("saga-2", RELEASED)
        await projection.apply_saga("saga-2", RESERVED)  # late and old: nothing
        final = {"apple": (8, 0, 2), "pear": (4, 0, 1)}
        assert levels(await projection.levels(["apple", "pear"])) == final
        row = await projection.sagas.find_one({"_id": "saga-2"})
        assert row is not None
        assert "pending" not in row
        totals = await projection.levels_docs.find({}).to_list(None)
        assert all(not doc.get("marks") for doc in totals), "marks are cleaned up"
    finally:
        await client.close()


async def test_a_lease_held_by_a_live_writer_is_not_taken_over(settings: Settings) -> None:
    """A pending movement whose lease still holds (its writer may be at work in another
    process) makes a second writer retry later instead of applying it too."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.require_mongodb_url())
    try:
        projection = StockProjection(database=client[settings.database])
        projection.saga_totals.lease = 60.0
        real = projection.saga_totals.finish

        async def stalls(*args: Any) -> None:
            raise asyncio.CancelledError  # the writer stops between its two writes

        projection.saga_totals.finish = stalls  # type: ignore[method-assign]
        with pytest.raises(asyncio.CancelledError):
            await projection.apply_saga("saga-3", RESERVED)
        projection.saga_totals.finish = real  # type: ignore[method-assign]
        with pytest.raises(TransientError, match="being applied"):
            await projection.apply_saga("saga-3", RESERVED)
        assert levels(await projection.levels(["apple"])) == {"apple": (0, 0, 0)}

        await projection.sagas.update_one({"_id": "saga-3"}, {"$set": {"pending.until": 0.0}})
        await projection.apply_saga("saga-3", RESERVED)  # the lease ran out: taken over
        assert levels(await projection.levels(["apple"])) == {"apple": (-2, 2, 0)}
    finally:
        await client.close()


async def test_metrics_and_stuck_sagas_read_counters_and_bounded_pages(
    watched: tuple[Any, Examined],
) -> None:
    """/metrics reads a few counter documents however many sagas ended or run; the stuck
    report reads at most a page per kind of stuckness, and finds the right ones."""
    db, listener = watched
    summaries = SagaSummaries(database=db)
    await summaries.ensure_indexes()
    analytics = SagaAnalytics(database=db)
    now = datetime.now(UTC)
    old, fresh = now - timedelta(hours=2), now - timedelta(seconds=5)
    docs = [
        {"_id": f"done-{i}", "status": "completed", "updated_at": old, "deadline": None}
        for i in range(300)
    ]
    docs += [
        {"_id": f"busy-{i}", "status": "running", "updated_at": fresh, "deadline": now}
        for i in range(300)
    ]
    docs += [
        {"_id": "parked", "status": "compensation_failed", "updated_at": old, "deadline": None},
        {"_id": "idle", "status": "running", "updated_at": old, "deadline": now},
        {"_id": "no-deadline", "status": "compensating", "updated_at": fresh, "deadline": None},
    ]
    await db["readside_sagas"].insert_many(docs)
    listener.reset()

    found = await summaries.stuck(idle_before=now - timedelta(minutes=10), limit=10)
    assert [d["_id"] for d in found] == ["parked", "idle", "no-deadline"]
    assert listener.documents <= 3 * 10

    listener.reset()
    text = await analytics.metrics()
    counts = await summaries.in_flight_counts()
    assert "saga_analytics_outcomes_total" in text
    assert set(counts) == {"running", "compensating", "compensation_failed", "completing_stuck"}
    assert listener.documents <= 5, listener.commands


async def test_in_flight_counts_follow_the_sagas_as_they_run_and_end(
    make_system: SystemFactory,
) -> None:
    """Two sagas wait on a broken payment: the in-flight gauge says 2 running, read
    from one counter document; once their commands are replayed and they complete, 0."""
    system = await make_system(retry_delays=(0.1,), step_timeout=300.0, step_max_sends=1)
    readside = ReadSideService(system.settings)
    await system.start_extra(readside)
    await system.inventory.inventory.set_stock("apple", 5)
    broken = Broken(system.payment.authorize)
    system.payment.on_command(AuthorizePayment, broken)
    sagas = [await system.order(("apple", 1)) for _ in range(2)]
    idle = {"running": 0, "compensating": 0, "compensation_failed": 0, "completing_stuck": 0}

    await eventually(
        readside.summaries.in_flight_counts,
        until=lambda c: c == idle | {"running": 2},
        what="two sagas in flight",
    )
    dlq = system.settings.topology().queue("payment.commands").dlq
    await eventually(lambda: depth(system.settings.amqp_url, dlq), until=lambda n: n == 2)
    broken.fixed = True
    assert (await replay(system.client.bus, dlq, selector=EVERYTHING)).count("done") == 2
    for saga_id in sagas:
        assert (await system.settle(saga_id)).status is Status.COMPLETED
    await eventually(
        readside.summaries.in_flight_counts, until=lambda c: c == idle, what="none in flight"
    )
