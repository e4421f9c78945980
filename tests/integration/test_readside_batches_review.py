"""Review of the read side's group commit: counters stay exact with increments queued
in a shared batch writer, and a guard stored but reported failed gives its lease up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import AutoReconnect

from orchestrator.errors import StoreUnavailable, TransientError
from orchestrator.readside import SagaSummaries
from orchestrator.settings import Settings
from tests.helpers import eventually
from tests.integration.test_readside_memory import EVENTS

pytestmark = pytest.mark.integration

Db = Any


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Db]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        settings.require_mongodb_url(), tz_aware=True
    )
    yield client[settings.database]
    await client.close()


async def until(check: Any, what: str) -> None:
    """Poll a condition on in-process state, with a deadline."""

    async def state() -> bool:
        return bool(check())

    await eventually(state, timeout=5.0, interval=0.005, what=what)


async def test_a_cancelled_increment_still_queued_is_not_applied_after_a_takeover(db: Db) -> None:
    """Two read-side processes. In the first, saga 'other's increment is in flight
    (slow store) and saga 's's increment waits behind it in the queue. The handler of
    's' is cancelled (consumer.abort, service kill): finish gives the lease up, the
    message comes back to the second process, which takes over, increments, clears and
    removes the mark. The queued increment of the first process must not be sent then:
    it finds no mark and counts 's' a second time."""
    first, second = SagaSummaries(database=db), SagaSummaries(database=db)
    updates = first.in_flight.writes.updates
    gate = asyncio.Event()
    original = updates.write_batch
    calls = 0

    async def slow_first_batch(items: Sequence[Any]) -> Sequence[Exception | None]:
        nonlocal calls
        calls += 1
        if calls == 1:
            await gate.wait()
        return await original(items)

    updates.write_batch = slow_first_batch  # type: ignore[method-assign]

    other = asyncio.create_task(first.apply("other", EVENTS[0]))
    await until(lambda: len(updates._in_flight) == 1, "the first batch in flight")
    held = asyncio.create_task(first.apply("s", EVENTS[0]))
    await until(lambda: len(updates._queue) == 1, "the increment of s queued")

    held.cancel()
    with pytest.raises(asyncio.CancelledError):
        await held
    guard = await db["readside_sagas"].find_one({"_id": "s"})
    assert guard is not None
    assert guard["pending"]["until"] == 0.0  # given up

    assert await second.apply("s", EVENTS[0]) == "duplicate"  # took over and finished
    gate.set()
    assert await other == "applied"
    await until(lambda: not updates._in_flight and not updates._queue, "the writer idle")

    assert (await second.in_flight_counts())["running"] == 2


async def test_a_stored_guard_reported_failed_is_given_up(db: Db) -> None:
    """The first summary's insert is stored, but its batch's round trip fails
    (AutoReconnect after the write): every caller of the batch gets StoreUnavailable and
    none gives its lease up, so the redelivery (another process) cannot finish the
    movement at once, as counters.py promises for a failed write; it waits the lease."""
    first, second = SagaSummaries(database=db), SagaSummaries(database=db)
    inserts = first.first_writes.inserts
    original = inserts.write_batch

    async def stored_then_lost(items: Sequence[Any]) -> Sequence[Exception | None]:
        await original(items)
        raise AutoReconnect("connection lost after the write")

    inserts.write_batch = stored_then_lost  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        await first.apply("s", EVENTS[0])

    try:
        await second.apply("s", EVENTS[0])
    except TransientError as e:
        pytest.fail(f"redelivery must finish the movement at once, got: {e}")
    assert (await second.in_flight_counts())["running"] == 1
