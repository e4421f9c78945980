"""The inventory store's idempotency and release edge cases, on the real store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from contracts import OrderLine
from orchestrator.settings import Settings
from participants.inventory.store import MongoInventory

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


async def test_release_of_an_abandoned_reservation_frees_its_holds_and_settles_it(
    inventory: MongoInventory,
) -> None:
    """A reservation interrupted after one hold (its lease given up) is released: the
    hold goes back, and a retried reserve then gets the failed outcome, not 'busy'."""
    assert await inventory._claim("saga-1", LINES) is None
    assert await inventory._hold("saga-1", "apple", 2)
    await inventory._abandon("saga-1")

    await inventory.release("saga-1")

    apple = await inventory.levels("apple")
    assert (apple.available, apple.reserved) == (5, 0)
    outcome = await inventory.reserve("saga-1", LINES)
    assert not outcome.reserved
    assert "released" in outcome.reason
    await inventory.release("saga-1")  # repeatable
    assert (await inventory.levels("apple")).available == 5


async def test_release_sweeps_a_hold_left_after_an_earlier_release(
    inventory: MongoInventory,
) -> None:
    """A hold that appeared after the reservation was marked released (a takeover racing
    the release) is swept by the next release instead of being stranded."""
    await inventory.release("saga-2")  # release before reserve: a marker
    assert await inventory._hold("saga-2", "pear", 1)  # a late worker's hold

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
