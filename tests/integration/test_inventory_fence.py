"""Issue 9.1: a worker that stalls while reserving must never leave stock held, nor
report a reservation the store does not have.

Two inventory objects on the real store play two service instances working on copies
of one ReserveStock (a relay republish or a deadline resend). Worker A is paused right
before it holds its second SKU; everything else happens while it waits, then it resumes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from contracts import OrderLine
from orchestrator.dev.harness import InvariantReport
from orchestrator.packs.order_fulfilment.invariants import check
from orchestrator.settings import Settings
from participants.inventory.store import MongoInventory
from participants.inventory.sweeper import HoldSweeper
from tests.helpers import eventually
from tests.integration.conftest import SystemFactory

pytestmark = pytest.mark.integration

LINES = (OrderLine(sku="a", quantity=2), OrderLine(sku="b", quantity=1))
SAGA = "saga-fence"
Db = Any


class Stalling(MongoInventory):
    """An inventory that stops before holding ``sku`` until ``go`` is set."""

    def __init__(self, *, sku: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stall_sku = sku
        self.stalled = asyncio.Event()
        self.go = asyncio.Event()

    async def _hold(self, saga_id: str, sku: str, *args: Any, **kwargs: Any) -> Any:
        if sku == self.stall_sku and not self.go.is_set():
            self.stalled.set()
            await self.go.wait()
        return await super()._hold(saga_id, sku, *args, **kwargs)


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Db]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        settings.require_mongodb_url(), tz_aware=True
    )
    yield client[settings.database]
    await client.close()


async def _stock(db: Db, **units: int) -> MongoInventory:
    inventory = MongoInventory(database=db)
    for sku, n in units.items():
        await inventory.set_stock(sku, n)
    return inventory


async def _stall_a(db: Db) -> tuple[Stalling, asyncio.Task[Any]]:
    """Worker A holds ``a`` and stops before ``b``, for as long as the test wants (past
    any lease: the fence does not depend on time)."""
    a = Stalling(sku="b", database=db)
    task = asyncio.create_task(a.reserve(SAGA, LINES))
    await asyncio.wait_for(a.stalled.wait(), timeout=10)
    return a, task


async def _holds(db: Db, sku: str) -> dict[str, Any]:
    doc = await db["inventory_stock"].find_one({"_id": sku}) or {}
    return dict(doc.get("holds") or {})


async def _report(db: Db, **initial: int) -> InvariantReport:
    report = InvariantReport()
    await check(db, states={}, report=report, facts={"initial_stock": initial}, all_sagas=False)
    return report


async def test_a_stalled_worker_that_wakes_after_takeover_and_release_holds_nothing(
    db: Db,
) -> None:
    """A stalls; B takes over and reserves; the payment is declined and the release
    sweeps; A wakes and holds ``b``. No unit of ``b`` may stay reserved, and A answers
    with the stored outcome (B's: its reply is a duplicate of B's anyway)."""
    b = await _stock(db, a=5, b=5)
    worker_a, task = await _stall_a(db)

    reserved = await b.reserve(SAGA, LINES)
    assert reserved.reserved
    await b.release(SAGA)
    worker_a.go.set()
    outcome = await asyncio.wait_for(task, timeout=10)

    assert outcome == reserved
    for sku in ("a", "b"):
        levels = await b.levels(sku)
        assert (levels.available, levels.reserved, levels.shipped) == (5, 0, 0), sku
        assert await _holds(db, sku) == {}
    assert (await _report(db, a=5, b=5)).ok


async def test_a_stalled_worker_does_not_answer_reserved_for_a_failed_reservation(
    db: Db,
) -> None:
    """A stalls; B takes over, finds ``b`` short and fails the reservation; ``b`` is
    restocked; A wakes and holds it. A must answer 'failed' (the stored outcome), else
    the saga would go on without stock, and must give ``b`` back."""
    b = await _stock(db, a=5, b=0)
    worker_a, task = await _stall_a(db)

    failed = await b.reserve(SAGA, LINES)
    assert not failed.reserved
    await b.restock("b", 3)
    worker_a.go.set()
    outcome = await asyncio.wait_for(task, timeout=10)

    assert outcome == failed
    assert (await b.levels("a")).available == 5
    assert ((await b.levels("b")).available, (await b.levels("b")).reserved) == (3, 0)
    assert await _holds(db, "b") == {}
    assert (await _report(db, a=5, b=3)).ok


async def test_a_stalled_worker_that_wakes_after_the_stock_shipped_ships_nothing_twice(
    db: Db,
) -> None:
    """A stalls; B reserves; the saga completes and the stock ships; A wakes and holds
    ``b`` again (B's hold is gone: it shipped). A's hold is not the one the reservation
    counts on, so A gives it back: shipped once, nothing left reserved."""
    b = await _stock(db, a=5, b=5)
    worker_a, task = await _stall_a(db)

    reserved = await b.reserve(SAGA, LINES)
    assert (await b.ship(SAGA)).shipped
    worker_a.go.set()
    outcome = await asyncio.wait_for(task, timeout=10)

    assert outcome == reserved
    levels = [await b.levels(sku) for sku in ("a", "b")]
    assert [(x.available, x.reserved, x.shipped) for x in levels] == [(3, 0, 2), (4, 0, 1)]
    assert await _holds(db, "b") == {}
    assert (await _report(db, a=5, b=5)).ok


async def test_two_attempts_at_once_reserve_once(db: Db) -> None:
    """Two copies of one command at the same moment, on two instances: one decision,
    the same answer to both, the units held once."""
    one, two = await _stock(db, a=5, b=5), MongoInventory(database=db)

    first, second = await asyncio.gather(one.reserve(SAGA, LINES), two.reserve(SAGA, LINES))

    assert first == second
    assert first.reserved
    levels = [await one.levels(sku) for sku in ("a", "b")]
    assert [(x.available, x.reserved) for x in levels] == [(3, 2), (4, 1)]
    assert (await _report(db, a=5, b=5)).ok


async def test_the_stock_invariant_reports_a_hold_of_a_released_reservation(db: Db) -> None:
    """The leak of the scenario above, made by hand: a hold left for a saga whose
    reservation was released. Conservation still adds up (the held units are counted
    in ``reserved``), so only the hold check can see it."""
    inventory = await _stock(db, a=5, b=5)
    assert (await inventory.reserve(SAGA, LINES)).reserved
    await inventory.release(SAGA)
    stale = Stalling(sku="-", database=db)
    await stale._hold(SAGA, "b", 1, *_token_of_a_stale_worker(stale))

    report = await _report(db, a=5, b=5)

    assert not report.passed("stock")
    assert any(SAGA in v and "b" in v for v in report.violations), report.violations


def _token_of_a_stale_worker(inventory: MongoInventory) -> tuple[Any, ...]:
    """The extra arguments ``_hold`` takes after the units: a stale attempt's token."""
    del inventory
    return ("stale-token",)


async def test_a_late_attempt_that_died_after_the_stock_shipped_leaves_nothing_held(
    db: Db,
) -> None:
    """The saga reserves and the stock ships; a late copy of ReserveStock holds ``b``
    again (the shipped hold is gone) and the inventory process dies before its insert.
    The copy's delivery ends in the dead-letter queue and an operator discards it:
    nothing will ever settle it, and the saga sends nothing more (it completed). The
    sweeper gives ``b`` back."""
    inventory = await _stock(db, a=5, b=5)
    assert (await inventory.reserve(SAGA, LINES)).reserved
    assert (await inventory.ship(SAGA)).shipped
    late = Stalling(sku="-", database=db)
    assert await late._hold(SAGA, "b", 1, "late-token") == "late-token"
    assert not (await _report(db, a=5, b=5)).passed("stock")

    assert await HoldSweeper(inventory=inventory).sweep() == 1

    levels = [await inventory.levels(sku) for sku in ("a", "b")]
    assert [(x.available, x.reserved, x.shipped) for x in levels] == [(3, 0, 2), (4, 0, 1)]
    assert await _holds(db, "b") == {}
    assert (await _report(db, a=5, b=5)).ok


async def test_the_sweeper_leaves_undecided_and_counted_holds_alone(db: Db) -> None:
    """A hold no reservation decided on yet may still win (an attempt in flight), and a
    reserved reservation's holds are the order's stock: the sweeper moves neither."""
    inventory = await _stock(db, a=5, b=5)
    assert (await inventory.reserve("saga-other", (OrderLine(sku="a", quantity=1),))).reserved
    worker_a, task = await _stall_a(db)

    assert await HoldSweeper(inventory=inventory).sweep() == 0

    worker_a.go.set()
    assert (await asyncio.wait_for(task, timeout=10)).reserved
    levels = [await inventory.levels(sku) for sku in ("a", "b")]
    assert [(x.available, x.reserved) for x in levels] == [(2, 3), (4, 1)]
    assert (await _report(db, a=5, b=5)).ok


async def test_the_inventory_service_sweeps_on_its_own(make_system: SystemFactory) -> None:
    """The running service sweeps every ``INVENTORY_SWEEP_SECONDS``: a stray hold left
    after a ship (as above) is given back without anyone asking."""
    system = await make_system(extra={"INVENTORY_SWEEP_SECONDS": "0.2"})
    inventory = system.inventory.inventory
    await inventory.set_stock("a", 5)
    await inventory.set_stock("b", 5)
    assert (await inventory.reserve(SAGA, LINES)).reserved
    assert (await inventory.ship(SAGA)).shipped
    assert await inventory._hold(SAGA, "b", 1, "late-token") == "late-token"

    await eventually(
        lambda: system.levels("b"),
        until=lambda b: (b.available, b.reserved, b.shipped) == (4, 0, 1),
        what="the stray hold swept",
    )
    # counted once its pass ends; a pass between the ship's flip and its own moves may
    # have moved those holds too (each hold moves once, whoever moves it)
    sweeper = system.inventory.sweeper
    await eventually(lambda: asyncio.sleep(0, sweeper.swept), until=lambda n: n >= 1)


async def test_a_late_copy_holding_stock_does_not_make_another_order_fail(db: Db) -> None:
    """The saga reserved and its stock shipped; a late copy of its ReserveStock (a relay
    republish) holds the last two units of ``a`` and stalls before ``b``. Another order
    for those two units must not be refused for stock that exists: the late copy's hold
    counts for no reservation, so the other order's reserve gives it back and takes it."""
    inventory = await _stock(db, a=4, b=5)
    assert (await inventory.reserve(SAGA, LINES)).reserved
    assert (await inventory.ship(SAGA)).shipped
    late, task = await _stall_a(db)

    other = await inventory.reserve("saga-other", (OrderLine(sku="a", quantity=2),))

    assert other.reserved, other
    late.go.set()
    assert (await asyncio.wait_for(task, timeout=10)).reserved  # the stored outcome
    levels = [await inventory.levels(sku) for sku in ("a", "b")]
    assert [(x.available, x.reserved, x.shipped) for x in levels] == [(0, 2, 2), (4, 0, 1)]
    assert (await _report(db, a=4, b=5)).ok
