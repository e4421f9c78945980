"""Fewer read-side round trips, exact as before: the saga-summary projection remembers
the summary it wrote last, so a saga's next event is applied without reading it (a
remembered copy behind the store, from another read-side instance, a rebuild or a
deletion, never wins over the store), and so does the stock projection with a saga's
row; the counters' marks are removed in shared round trips."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from contracts import ProgressEvent, SagaProgressed
from orchestrator.packs.order_fulfilment.stock import StockProjection
from orchestrator.readside import SagaSummaries
from orchestrator.readside.summaries import fold
from orchestrator.settings import Settings
from tests.integration.test_readside_scale import Examined, levels

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 1, tzinfo=UTC)
STEPS = ("reserve_stock", "authorize_payment", "schedule_shipment")


def event(version: int) -> SagaProgressed:
    """Version 1 starts the saga, each next one finishes a step and starts the next; the
    last one completes it."""
    at = T0 + timedelta(seconds=version)
    last = version == len(STEPS) + 1
    events = (
        [ProgressEvent(type="saga_started", at=at)]
        if version == 1
        else [ProgressEvent(type="step_succeeded", at=at, step=STEPS[version - 2])]
    )
    if not last:
        events.append(ProgressEvent(type="step_started", at=at, step=STEPS[version - 1]))
    else:
        events.append(ProgressEvent(type="saga_completed", at=at))
    return SagaProgressed(
        saga_name="order_fulfilment",
        version=version,
        status="completed" if last else "running",
        step=None if last else STEPS[version - 1],
        started_at=T0,
        events=tuple(events),
        start={"lines": [{"sku": "apple", "quantity": 1}]},
    )


EVENTS = [event(v) for v in range(1, len(STEPS) + 2)]


def expected(saga_id: str, upto: int) -> dict[str, Any]:
    summary: dict[str, Any] | None = None
    for e in EVENTS[:upto]:
        summary = fold(summary, saga_id, e)
    assert summary is not None
    return summary


def same(stored: dict[str, Any] | None, wanted: dict[str, Any]) -> None:
    assert stored is not None
    for key in ("version", "status", "step", "events", "step_since", "updated_at"):
        assert stored[key] == wanted[key], key


@pytest.fixture
async def watched(settings: Settings) -> AsyncIterator[tuple[Any, Examined]]:
    listener = Examined()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        settings.require_mongodb_url(), tz_aware=True, event_listeners=[listener]
    )
    try:
        yield client[settings.database], listener
    finally:
        await client.close()


async def test_a_sagas_events_read_its_summary_once(watched: tuple[Any, Examined]) -> None:
    """Four events of one saga: the first finds no summary (one read); the others are
    applied on top of what this process wrote (no read), and the result is the fold."""
    db, listener = watched
    summaries = SagaSummaries(database=db)
    listener.reset()

    for e in EVENTS:
        assert await summaries.apply("s-1", e) == "applied"

    assert listener.commands.count("find") == 1, listener.commands
    same(await summaries.get("s-1"), expected("s-1", len(EVENTS)))
    assert summaries.known.reads_saved == len(EVENTS) - 1
    assert "s-1" not in summaries.known, "an ended saga is not kept"
    assert await summaries.in_flight_counts() == dict.fromkeys(
        ("running", "compensating", "compensation_failed", "completing_stuck"), 0
    )


async def test_a_copy_behind_another_instance_is_corrected_from_the_store(
    watched: tuple[Any, Examined],
) -> None:
    """Instance A applies v1 and v2; instance B (the same queue, competing) applies v3;
    a copy of v3 reaches A: from what A remembers (v2) it is the next version, but the
    write conditional on v2 fails, A reads the store and finds it a duplicate. Then A
    applies v4 on top of v3."""
    db, _ = watched
    a, b = SagaSummaries(database=db), SagaSummaries(database=db)
    assert await a.apply("s-2", EVENTS[0]) == "applied"
    assert await a.apply("s-2", EVENTS[1]) == "applied"
    assert await b.apply("s-2", EVENTS[2]) == "applied"

    assert await a.apply("s-2", EVENTS[2]) == "duplicate"
    assert await a.apply("s-2", EVENTS[3]) == "applied"

    same(await a.get("s-2"), expected("s-2", 4))
    counts = await a.in_flight_counts()
    assert counts["running"] == 0, "started once, completed once"


async def test_a_gap_seen_from_memory_reads_the_store_before_rebuilding(
    watched: tuple[Any, Examined],
) -> None:
    """A remembers v1; B applies v2; A gets v3: from memory that is a gap (v1 -> v3),
    but the store holds v2, so A applies v3 on it instead of rebuilding (the event
    store is empty here: a rebuild would find nothing and lose the summary)."""
    db, _ = watched
    a, b = SagaSummaries(database=db), SagaSummaries(database=db)
    assert await a.apply("s-3", EVENTS[0]) == "applied"
    assert await b.apply("s-3", EVENTS[1]) == "applied"

    assert await a.apply("s-3", EVENTS[2]) == "applied"

    same(await a.get("s-3"), expected("s-3", 3))


async def test_a_summary_deleted_under_the_copy_is_not_written_back_from_memory(
    watched: tuple[Any, Examined],
) -> None:
    """A remembers v2; the summary is deleted (a rebuild starting over): A's next event
    must not recreate it from memory. The store says there is nothing, so v3 is a gap
    and A rebuilds from the event store (empty here: no summary)."""
    db, _ = watched
    summaries = SagaSummaries(database=db)
    for e in EVENTS[:2]:
        await summaries.apply("s-4", e)
    await summaries.docs.delete_many({"_id": "s-4"})

    assert await summaries.apply("s-4", EVENTS[2]) == "rebuilt"

    assert await summaries.get("s-4") is None


async def test_concurrent_movements_share_the_removal_of_their_marks(
    watched: tuple[Any, Examined],
) -> None:
    """Ten sagas start at once: ten movements of the in-flight counter, whose increments
    and mark removals (twenty updates) share round trips; no mark stays, and the count
    is exact."""
    db, _ = watched
    summaries = SagaSummaries(database=db)

    await asyncio.gather(*(summaries.apply(f"m-{i}", EVENTS[0]) for i in range(10)))

    assert (await summaries.in_flight_counts())["running"] == 10
    updates = summaries.in_flight.writes.updates
    assert 1 <= updates.batches < 20, updates.batches
    counter = await db["readside_counters"].find_one({"_id": "in_flight"})
    assert counter is not None
    assert not counter.get("marks"), counter


def stock_event(version: int, *types: tuple[str, str | None]) -> SagaProgressed:
    return SagaProgressed(
        saga_name="order_fulfilment",
        version=version,
        status="completed" if ("saga_completed", None) in types else "running",
        events=tuple(ProgressEvent(type=t, at=T0, step=step) for t, step in types),
        start={"lines": [{"sku": "apple", "quantity": 2}]},
    )


RESERVED = stock_event(2, ("step_succeeded", "reserve_stock"))
SHIPPED = stock_event(6, ("step_succeeded", "ship_stock"), ("saga_completed", None))


async def test_the_stock_projection_ships_on_the_row_it_remembers(
    watched: tuple[Any, Examined],
) -> None:
    """Reserved, then shipped: the second event reads no row; the totals are exact."""
    db, listener = watched
    projection = StockProjection(database=db)
    listener.reset()

    assert await projection.apply_saga("o-1", RESERVED)
    assert await projection.apply_saga("o-1", SHIPPED)

    finds = [c for c in listener.commands if c == "find"]
    assert len(finds) == 1, listener.commands
    assert levels(await projection.levels(["apple"])) == {"apple": (-2, 0, 2)}
    assert "o-1" not in projection.known, "a shipped row has no next event to wait for"


async def test_a_stock_row_behind_another_instance_counts_nothing_twice(
    watched: tuple[Any, Examined],
) -> None:
    """A reserves; B (competing on the same queue) ships; a copy of the shipment reaches
    A, which remembers the row as reserved: its write conditional on that version fails,
    it reads the store and finds the shipment applied. Shipped once, reserved none."""
    db, _ = watched
    a, b = StockProjection(database=db), StockProjection(database=db)
    assert await a.apply_saga("o-2", RESERVED)
    assert await b.apply_saga("o-2", SHIPPED)

    assert not await a.apply_saga("o-2", SHIPPED)

    assert levels(await a.levels(["apple"])) == {"apple": (-2, 0, 2)}
    row = await db["readside_stock_sagas"].find_one({"_id": "o-2"})
    assert row is not None
    assert (row["state"], row["version"]) == ("shipped", 6)
