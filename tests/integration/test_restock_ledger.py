"""Issue 9.2: restocks are added once per restock id, with their dedupe records in
``inventory_restocks`` (a retention, by TTL index), not inside the SKU's document."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from contracts import InventoryRestocked
from orchestrator.packs.order_fulfilment.readside import StockReadSide
from orchestrator.settings import Settings
from participants.inventory.restocks import RestockLedger
from participants.inventory.store import MongoInventory

pytestmark = pytest.mark.integration

Db = Any


class StallingLedger(RestockLedger):
    """A ledger that stops once, after recording a restock and before adding it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stalled = asyncio.Event()
        self.go = asyncio.Event()

    async def _add_upto(self, *args: Any, **kwargs: Any) -> None:
        if not self.go.is_set():
            self.stalled.set()
            await self.go.wait()
        await super()._add_upto(*args, **kwargs)


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Db]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        settings.require_mongodb_url(), tz_aware=True
    )
    yield client[settings.database]
    await client.close()


async def test_a_restock_id_adds_its_units_once_and_stays_out_of_the_sku_document(
    db: Db,
) -> None:
    inventory = MongoInventory(database=db, restock_retention_seconds=3600)
    await inventory.ensure_indexes()
    await inventory.set_stock("apple", 5)

    assert await inventory.apply_restock("apple", 10, "r-1")
    assert not await inventory.apply_restock("apple", 10, "r-1")
    assert await inventory.apply_restock("apple", 3, "r-2")
    assert await inventory.apply_restock("kiwi", 4, "r-3")  # a SKU seen the first time

    assert (await inventory.levels("apple")).available == 18
    assert (await inventory.levels("kiwi")).available == 4
    doc = await db["inventory_stock"].find_one({"_id": "apple"})
    assert "restocks" not in doc
    records = await db["inventory_restocks"].find({}, {"at": 0}).sort("_id").to_list(None)
    assert records == [
        {"_id": "r-1", "sku": "apple", "units": 10, "seq": 1},
        {"_id": "r-2", "sku": "apple", "units": 3, "seq": 2},
        {"_id": "r-3", "sku": "kiwi", "units": 4, "seq": 1},
    ]
    indexes = await db["inventory_restocks"].index_information()
    ttl = [i for i in indexes.values() if "expireAfterSeconds" in i]
    assert [(i["key"], i["expireAfterSeconds"]) for i in ttl] == [([("at", 1)], 3600)]


async def test_copies_of_one_restock_at_once_add_it_once(db: Db) -> None:
    one, two = MongoInventory(database=db), MongoInventory(database=db)
    await one.ensure_indexes()
    await one.set_stock("apple", 0)

    added = await asyncio.gather(
        one.apply_restock("apple", 7, "r-1"), two.apply_restock("apple", 7, "r-1")
    )

    assert sorted(added) == [False, True]
    assert (await one.levels("apple")).available == 7


async def test_a_stalled_restock_is_added_by_the_next_one_and_never_twice(db: Db) -> None:
    """Attempt A records restock r-1 and stalls before adding it. Restock r-2 finds r-1's
    position taken, adds r-1 first, then itself. A wakes: r-1 is added already, so it adds
    nothing. A copy of r-1 delivered later is a duplicate."""
    inventory = MongoInventory(database=db)
    await inventory.ensure_indexes()
    await inventory.set_stock("apple", 0)
    stalling, ledger = MongoInventory(database=db), StallingLedger(database=db)
    stalling.ledger = ledger
    task = asyncio.create_task(stalling.apply_restock("apple", 10, "r-1"))
    await asyncio.wait_for(ledger.stalled.wait(), timeout=10)

    assert await inventory.apply_restock("apple", 1, "r-2")
    assert (await inventory.levels("apple")).available == 11
    ledger.go.set()
    assert await asyncio.wait_for(task, timeout=10)

    assert not await inventory.apply_restock("apple", 10, "r-1")
    apple = await inventory.levels("apple")
    assert apple.available == 11
    doc = await db["inventory_stock"].find_one({"_id": "apple"})
    assert doc["restock_seq"] == 2


async def _rebuilt_levels(db: Db, settings: Settings, sku: str) -> tuple[int, int, int]:
    """The stock projection's levels of ``sku`` after a rebuild of its restocks."""
    side = StockReadSide(database=db, settings=settings)
    await side.stock.restocks.delete_many({})  # what rebuild_projections does first
    await side.rebuild_begin()
    levels = (await side.stock.levels([sku]))[sku]
    return levels.available, levels.reserved, levels.shipped


async def test_a_rebuild_counts_the_restocks_whose_records_expired(
    db: Db, settings: Settings
) -> None:
    """Restocks r-1 and r-2 are added; r-1's dedupe record then passes the retention
    and the TTL monitor removes it. A rebuilt stock projection still counts r-1's units
    (from the SKU's cumulative ``restocked``), and a redelivered event of r-2 after the
    rebuild counts nothing twice."""
    inventory = MongoInventory(database=db)
    await inventory.ensure_indexes()
    assert await inventory.apply_restock("apple", 10, "r-1")
    assert await inventory.apply_restock("apple", 3, "r-2")
    await db["inventory_restocks"].delete_one({"_id": "r-1"})  # expired

    assert await _rebuilt_levels(db, settings, "apple") == (13, 0, 0)
    side = StockReadSide(database=db, settings=settings)
    redelivered = InventoryRestocked(sku="apple", units=3, restock_id="r-2")
    assert not await side.stock.apply_restock(redelivered)
    assert (await side.stock.levels(["apple"]))["apple"].available == 13


async def test_a_rebuild_during_a_restock_counts_it_once(db: Db, settings: Settings) -> None:
    """Restock r-2 is recorded and stalls before its units are added; a rebuild runs in
    between (r-1's record has expired). The projection counts r-2 once: from its record
    now, and not again when the units are added and its event arrives."""
    inventory = MongoInventory(database=db)
    await inventory.ensure_indexes()
    assert await inventory.apply_restock("apple", 10, "r-1")
    await db["inventory_restocks"].delete_one({"_id": "r-1"})
    stalling, ledger = MongoInventory(database=db), StallingLedger(database=db)
    stalling.ledger = ledger
    task = asyncio.create_task(stalling.apply_restock("apple", 4, "r-2"))
    await asyncio.wait_for(ledger.stalled.wait(), timeout=10)

    assert await _rebuilt_levels(db, settings, "apple") == (14, 0, 0)
    ledger.go.set()
    assert await asyncio.wait_for(task, timeout=10)
    side = StockReadSide(database=db, settings=settings)
    assert not await side.stock.apply_restock(
        InventoryRestocked(sku="apple", units=4, restock_id="r-2")
    )
    assert (await side.stock.levels(["apple"]))["apple"].available == 14
    assert (await inventory.levels("apple")).available == 14


async def test_a_rebuild_after_the_upgrade_counts_restocks_from_both_versions(
    db: Db, settings: Settings
) -> None:
    """A SKU restocked by the version before the cumulative count (ledger position 1,
    no ``restocked``), then by this one (position 2, whose record later expires): the
    rebuild counts the first from its record and the second from ``restocked``."""
    await db["inventory_stock"].insert_one(
        {"_id": "apple", "available": 5, "reserved": 0, "shipped": 0, "holds": {}, "restock_seq": 1}
    )
    await db["inventory_restocks"].insert_one(
        {"_id": "r-old", "sku": "apple", "units": 5, "seq": 1, "at": datetime.now(UTC)}
    )
    inventory = MongoInventory(database=db)
    await inventory.ensure_indexes()
    assert await inventory.apply_restock("apple", 2, "r-new")
    await db["inventory_restocks"].delete_one({"_id": "r-new"})

    assert await _rebuilt_levels(db, settings, "apple") == (7, 0, 0)
    assert (await inventory.levels("apple")).available == 7
