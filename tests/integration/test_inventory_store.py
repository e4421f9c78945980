"""The inventory store's idempotency, release and ship edge cases, on the real store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from contracts import OrderLine
from orchestrator.errors import StoreUnavailable
from orchestrator.settings import Settings
from orchestrator.store.writes import DocumentWrites
from participants.inventory.store import MongoInventory, ShipOutcome
from participants.inventory.sweeper import HoldSweeper

pytestmark = pytest.mark.integration

LINES = (OrderLine(sku="apple", quantity=2), OrderLine(sku="pear", quantity=1))


@pytest.fixture
async def inventory(settings: Settings) -> AsyncIterator[MongoInventory]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        settings.require_mongodb_url(), tz_aware=True
    )
    store = MongoInventory(database=client[settings.database])
    await store.set_stock("apple", 5)
    await store.set_stock("pear", 5)
    yield store
    await client.close()


async def test_a_release_before_the_decision_refuses_the_redelivered_reserve(
    inventory: MongoInventory,
) -> None:
    """A reserve attempt held ``apple`` and died before deciding; the release arrives
    first (a marker). The redelivered reserve is refused with the marker's outcome and
    gives back what the dead attempt held."""
    assert await inventory._hold("saga-1", "apple", 2, "dead-attempt") == "dead-attempt"

    await inventory.release("saga-1")
    outcome = await inventory.reserve("saga-1", LINES)

    assert not outcome.reserved
    assert "released" in outcome.reason
    await inventory.release("saga-1")  # repeatable
    apple, pear = await inventory.levels("apple"), await inventory.levels("pear")
    assert (apple.available, apple.reserved, pear.available, pear.reserved) == (5, 0, 5, 0)


async def test_a_repeated_release_sweeps_a_hold_made_after_the_first(
    inventory: MongoInventory,
) -> None:
    """A hold that a late attempt made after the release (before it found out) is swept
    by the next release too, not only by that attempt."""
    assert (await inventory.reserve("saga-2", LINES)).reserved
    await inventory.release("saga-2")
    assert await inventory._hold("saga-2", "pear", 1, "late-attempt") == "late-attempt"

    await inventory.release("saga-2")

    pear = await inventory.levels("pear")
    assert (pear.available, pear.reserved, pear.total) == (5, 0, 5)


async def test_reserve_twice_holds_once_and_answers_the_same(inventory: MongoInventory) -> None:
    first = await inventory.reserve("saga-3", LINES)
    second = await inventory.reserve("saga-3", LINES)

    assert first == second
    assert first.reserved
    apple, pear = await inventory.levels("apple"), await inventory.levels("pear")
    assert (apple.available, apple.reserved, pear.available, pear.reserved) == (3, 2, 4, 1)


async def test_ship_moves_held_units_to_shipped_exactly_once(inventory: MongoInventory) -> None:
    """Ship twice (a redelivery, or the event and the command): the units move once, and
    a release afterwards gives nothing back."""
    assert (await inventory.reserve("saga-4", LINES)).reserved

    first = await inventory.ship("saga-4")
    second = await inventory.ship("saga-4")
    await inventory.release("saga-4")

    assert first == second == ShipOutcome(shipped=True, units=3)
    apple, pear = await inventory.levels("apple"), await inventory.levels("pear")
    assert (apple.available, apple.reserved, apple.shipped) == (3, 0, 2)
    assert (pear.available, pear.reserved, pear.shipped) == (4, 0, 1)


async def test_an_interrupted_ship_is_finished_by_its_repeat(settings: Settings) -> None:
    """The store fails after the status flipped and one SKU moved: the repeat (the
    redelivered command) moves the other one, and nothing moves twice."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.require_mongodb_url())
    broken = FailsOnSecondMove(database=client[settings.database])
    await broken.set_stock("apple", 5)
    await broken.set_stock("pear", 5)
    assert (await broken.reserve("saga-5", LINES)).reserved

    with pytest.raises(StoreUnavailable):
        await broken.ship("saga-5")
    assert await broken.ship("saga-5") == ShipOutcome(shipped=True, units=3)

    apple, pear = await broken.levels("apple"), await broken.levels("pear")
    assert (apple.reserved, apple.shipped, pear.reserved, pear.shipped) == (0, 2, 0, 1)
    await client.close()


async def test_ship_refuses_what_is_not_reserved(inventory: MongoInventory) -> None:
    await inventory.release("saga-6")
    await inventory.set_stock("pear", 0)
    assert not (await inventory.reserve("saga-7", LINES)).reserved

    assert await inventory.ship("saga-6") == ShipOutcome(shipped=False, status="released")
    assert await inventory.ship("saga-7") == ShipOutcome(shipped=False, status="failed")
    assert await inventory.ship("saga-unknown") == ShipOutcome(shipped=False, status=None)
    assert (await inventory.levels("apple")).shipped == 0


async def test_holds_of_the_version_before_the_fence_still_ship_and_release(
    inventory: MongoInventory,
) -> None:
    """Upgrade: reservations stored by the previous version (holds as plain numbers, lines
    without tokens, undecided claims with status 'reserving') are shipped, released
    and decided by this one."""
    stock, reservations = inventory.stock, inventory.reservations
    lines = [{"sku": "apple", "quantity": 2}]
    for saga_id in ("old-reserved", "old-released", "old-claim"):
        await stock.update_one(
            {"_id": "apple"},
            {"$inc": {"available": -2, "reserved": 2}, "$set": {f"holds.{saga_id}": 2}},
        )
    await reservations.insert_many(
        [
            {"_id": "old-reserved", "status": "reserved", "outcome": "reserved", "lines": lines},
            {"_id": "old-released", "status": "reserved", "outcome": "reserved", "lines": lines},
            {"_id": "old-claim", "status": "reserving", "outcome": None, "lines": lines},
        ]
    )

    assert (await inventory.ship("old-reserved")).shipped
    await inventory.release("old-released")
    claimed = await inventory.reserve("old-claim", (OrderLine(sku="apple", quantity=2),))

    assert claimed.reserved
    apple = await inventory.levels("apple")
    assert (apple.available, apple.reserved, apple.shipped) == (1, 2, 2)
    assert (await inventory.ship("old-claim")).shipped
    assert (await inventory.levels("apple")).shipped == 4


class FailsOnSecondUpdate(DocumentWrites):
    """Batched updates of which the second fails (once), after the first was applied."""

    seen = 0

    async def update(self, query: Mapping[str, Any], update: Mapping[str, Any]) -> None:
        self.seen += 1
        if self.seen == 2:
            raise StoreUnavailable("the store went away")
        await super().update(query, update)


class FailsOnSecondMove(MongoInventory):
    """The store fails on the second hold this object moves (once)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stock_writes = FailsOnSecondUpdate(self.stock)


async def test_a_release_with_the_lines_gives_back_what_an_undecided_reserve_held(
    inventory: MongoInventory,
) -> None:
    """A reserve attempt held ``apple``, then the store failed on ``pear`` until the
    command was dead-lettered (its resends too); the saga gave up on the step and sent
    ReleaseStock; an operator discarded the dead letter, so no copy will ever settle.
    No reservation was ever decided: the release alone must give ``apple`` back, from
    the order's lines, and the reserve stays refused if it is replayed after all."""
    assert await inventory._hold("saga-8", "apple", 2, "dead-attempt") == "dead-attempt"

    await inventory.release("saga-8", LINES)

    apple = await inventory.levels("apple")
    assert (apple.available, apple.reserved) == (5, 0)
    assert await _holds(inventory, "apple") == {}
    replayed = await inventory.reserve("saga-8", LINES)
    assert not replayed.reserved
    levels = [await inventory.levels(s) for s in ("apple", "pear")]
    assert [(x.available, x.reserved) for x in levels] == [(5, 0), (5, 0)]


async def test_a_release_with_the_lines_sweeps_under_a_marker_without_lines(
    inventory: MongoInventory,
) -> None:
    """The first release came from an orchestrator that sent no lines (a marker without
    lines); a hold made after it by an attempt that never settled is given back by the
    next release, which has the lines."""
    await inventory.release("saga-9")
    assert await inventory._hold("saga-9", "pear", 1, "dead-attempt") == "dead-attempt"

    await inventory.release("saga-9", LINES)

    pear = await inventory.levels("pear")
    assert (pear.available, pear.reserved) == (5, 0)


async def test_the_sweeper_finishes_a_ship_and_a_release_that_were_never_redelivered(
    settings: Settings,
) -> None:
    """The store failed between the moves of a ship and of a release, and neither
    command came back (dead-lettered, then discarded). The sweeper finishes both: the
    shipped reservation's units are shipped, the released one's are available."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.require_mongodb_url())
    db = client[settings.database]
    inventory = MongoInventory(database=db)
    await inventory.set_stock("apple", 5)
    await inventory.set_stock("pear", 5)
    one = (OrderLine(sku="apple", quantity=1), OrderLine(sku="pear", quantity=1))
    assert (await inventory.reserve("saga-ship", one)).reserved
    assert (await inventory.reserve("saga-release", one)).reserved
    ship, release = FailsOnSecondMove(database=db), FailsOnSecondMove(database=db)
    with pytest.raises(StoreUnavailable):
        await ship.ship("saga-ship")
    with pytest.raises(StoreUnavailable):
        await release.release("saga-release")

    swept = await HoldSweeper(inventory=inventory).sweep()

    assert swept == 2
    apple, pear = await inventory.levels("apple"), await inventory.levels("pear")
    assert (apple.available, apple.reserved, apple.shipped) == (4, 0, 1)
    assert (pear.available, pear.reserved, pear.shipped) == (4, 0, 1)
    assert await _holds(inventory, "apple") == {}
    assert await _holds(inventory, "pear") == {}
    assert await HoldSweeper(inventory=inventory).sweep() == 0
    await client.close()


async def _holds(inventory: MongoInventory, sku: str) -> dict[str, Any]:
    doc = await inventory.stock.find_one({"_id": sku}) or {}
    return dict(doc.get("holds") or {})
