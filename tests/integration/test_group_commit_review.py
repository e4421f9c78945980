"""Review of the participants' group commit (orchestrator.store.writes) against the
invariants: per-write outcomes, conservation, cancellation, configuration."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import DuplicateKeyError

from contracts import OrderLine
from orchestrator.errors import StoreUnavailable
from orchestrator.runtime.batcher import GroupWriter
from orchestrator.settings import Settings
from orchestrator.store.writes import DocumentWrites
from participants.inventory.store import MongoInventory
from participants.kit.writes import WINDOW_ENV, write_window

pytestmark = pytest.mark.integration

Db = Any


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Db]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        settings.require_mongodb_url(), tz_aware=True
    )
    yield client[settings.database]
    await client.close()


# --- configuration ----------------------------------------------------------------------


def test_the_documented_default_window_of_zero_can_be_set_explicitly() -> None:
    """README: PARTICIPANT_WRITE_WINDOW_MS defaults to 0. Setting it to 0 must not stop
    the inventory, payment and shipping services with a ConfigError."""
    assert write_window({WINDOW_ENV: "0"}) == 0.0


def test_an_infinite_window_is_refused() -> None:
    """inf (or 1e400) would park every write until 100 are queued: at low load no
    command is ever answered or acked."""
    with pytest.raises(Exception, match=WINDOW_ENV):
        write_window({WINDOW_ENV: "inf"})


# --- per-write outcomes on the real store ------------------------------------------------


async def test_a_duplicate_fails_only_its_own_insert(db: Db) -> None:
    writes = DocumentWrites(db["review_docs"])
    await db["review_docs"].insert_one({"_id": "taken"})
    outcomes = await asyncio.gather(
        writes.insert({"_id": "a"}),
        writes.insert({"_id": "taken"}),
        writes.insert({"_id": "b"}),
        return_exceptions=True,
    )
    assert outcomes[0] is None
    assert outcomes[2] is None
    assert isinstance(outcomes[1], DuplicateKeyError)
    assert writes.inserts.batches == 1
    assert {d["_id"] async for d in db["review_docs"].find()} == {"a", "b", "taken"}


async def test_two_moves_of_one_hold_in_one_unordered_bulk_move_it_once(db: Db) -> None:
    """Release's targets (wanted | stored lines) may name one hold twice; in one
    unordered bulk only one may match, so stock is conserved."""
    inventory = MongoInventory(database=db)
    await inventory.set_stock("apple", 5)
    assert (await inventory.reserve("s1", (OrderLine(sku="apple", quantity=2),))).reserved
    await asyncio.gather(
        inventory._moves("s1", [("apple", 2)], to="available"),
        inventory._moves("s1", [("apple", 2)], to="available"),
    )
    levels = await inventory.levels("apple")
    assert (levels.available, levels.reserved, levels.total) == (5, 0, 5)
    assert inventory.stock_writes.updates.batches == 1


async def test_a_failed_update_fails_only_its_own_move(db: Db) -> None:
    stock = db["inventory_stock"]
    await stock.insert_many([{"_id": "x", "n": 1}, {"_id": "y", "n": "text"}])
    writes = DocumentWrites(stock)
    outcomes = await asyncio.gather(
        writes.update({"_id": "x"}, {"$inc": {"n": 1}}),
        writes.update({"_id": "y"}, {"$inc": {"n": 1}}),  # $inc on a string: write error
        return_exceptions=True,
    )
    assert outcomes[0] is None
    assert isinstance(outcomes[1], StoreUnavailable)
    assert (await stock.find_one({"_id": "x"}) or {})["n"] == 2


async def test_a_store_failure_fails_every_write_of_the_batch(db: Db) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300"
    )
    writes = DocumentWrites(client["nowhere"]["docs"])
    outcomes = await asyncio.gather(
        writes.insert({"_id": "a"}), writes.insert({"_id": "b"}), return_exceptions=True
    )
    await client.close()
    assert all(isinstance(o, StoreUnavailable) for o in outcomes)


# --- cancellation -----------------------------------------------------------------------


class Gated(GroupWriter[str]):
    def __init__(self) -> None:
        super().__init__()
        self.go = asyncio.Event()
        self.batches_seen: list[list[str]] = []

    async def write_batch(self, items: Sequence[str]) -> Sequence[Exception | None]:
        self.batches_seen.append(list(items))
        await self.go.wait()
        return [None] * len(items)


async def test_a_cancelled_handler_leaves_its_batch_neighbours_their_outcome() -> None:
    writer = Gated()
    one = asyncio.create_task(writer.submit("one"))
    two = asyncio.create_task(writer.submit("two"))
    for _ in range(5):
        await asyncio.sleep(0)
    one.cancel()
    writer.go.set()
    await asyncio.wait_for(two, timeout=5)
    assert writer.batches_seen == [["one", "two"]]


async def test_a_cancelled_batch_leaves_no_handler_waiting_forever() -> None:
    """If the batch's own task is cancelled (a shutdown that cancels every task but
    the handlers', a pymongo-internal cancellation), its handlers must not wait
    forever: _write only resolves futures on ``Exception``."""
    writer = Gated()
    handler = asyncio.create_task(writer.submit("one"))
    for _ in range(5):
        await asyncio.sleep(0)
    (batch,) = writer._in_flight
    batch.cancel()
    with pytest.raises((StoreUnavailable, asyncio.CancelledError)):
        await asyncio.wait_for(handler, timeout=2)


class Failing(GroupWriter[str]):
    async def write_batch(self, items: Sequence[str]) -> Sequence[Exception | None]:
        raise StoreUnavailable("the store went away")


async def test_each_handler_of_a_failed_batch_gets_its_own_exception() -> None:
    """One exception object raised in many handlers: each raise rewrites its
    __traceback__ and a raise inside an ``except`` sets its __context__ for all."""
    writer = Failing()
    one, two = await asyncio.gather(
        writer.submit("one"), writer.submit("two"), return_exceptions=True
    )
    assert isinstance(one, StoreUnavailable)
    assert isinstance(two, StoreUnavailable)
    assert one is not two


async def test_an_unencodable_update_fails_only_its_own_write(db: Db) -> None:
    """_Inserts retries one by one on an encoding error; _Updates does not: one bad
    UpdateOne fails every neighbour of its bulk (as StoreUnavailable, i.e. transient)."""
    stock = db["inventory_stock"]
    await stock.insert_one({"_id": "x", "n": 1})
    writes = DocumentWrites(stock)
    good, bad = await asyncio.gather(
        writes.update({"_id": "x"}, {"$inc": {"n": 1}}),
        writes.update({"_id": "x"}, {"$set": {"m": 2**64}}),
        return_exceptions=True,
    )
    assert good is None, good
    assert isinstance(bad, OverflowError | StoreUnavailable)


async def test_update_matched_is_true_only_when_the_whole_batch_matched(db: Db) -> None:
    """A bulk write counts its matches, not which ones: a batch in which one update
    matches nothing answers False to every caller (they look again), one in which all
    match answers True, and every update was applied either way."""
    docs = db["review_matched"]
    await docs.insert_many([{"_id": "x", "n": 0}, {"_id": "y", "n": 0}])
    writes = DocumentWrites(docs)

    mixed = await asyncio.gather(
        writes.update_matched({"_id": "x"}, {"$inc": {"n": 1}}),
        writes.update_matched({"_id": "nobody"}, {"$inc": {"n": 1}}),
        writes.update_matched({"_id": "y"}, {"$inc": {"n": 1}}),
    )
    matched = await asyncio.gather(
        writes.update_matched({"_id": "x"}, {"$inc": {"n": 1}}),
        writes.update_matched({"_id": "y"}, {"$inc": {"n": 1}}),
    )

    assert mixed == [False, False, False]
    assert matched == [True, True]
    assert writes.updates.batches == 2
    assert {d["_id"]: d["n"] async for d in docs.find()} == {"x": 2, "y": 2}
