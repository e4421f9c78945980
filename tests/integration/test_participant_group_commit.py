"""Group commit in the participants (``orchestrator.store.writes``), against the real
store: a batch with duplicates and a race beside good writes treats each on its own; a
batch the store fails fails every command in it, none acked, each redelivered; a SIGKILL
with a half-filled batch loses nothing."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from contracts import AuthorizePayment, OrderLine, ScheduleShipment
from orchestrator.client import SagaClient, new_saga_id
from orchestrator.dev.bench.probe import CommandCounter
from orchestrator.dev.processes import ServiceProcess
from orchestrator.errors import StoreUnavailable
from orchestrator.saga.state import Status
from orchestrator.settings import Settings
from orchestrator.store.writes import DocumentWrites
from participants.inventory import InventoryService
from participants.inventory.store import MongoInventory, ReserveOutcome
from participants.payment.service import MongoPayments
from participants.shipping.service import MongoShipments
from tests.helpers import eventually
from tests.integration.conftest import System
from tests.integration.test_group_commit import view_order

pytestmark = pytest.mark.integration

Doc = dict[str, Any]


@pytest.fixture
async def counted(settings: Settings) -> AsyncIterator[tuple[CommandCounter, Any]]:
    """A database on a client whose commands are counted."""
    counter = CommandCounter()
    client: AsyncMongoClient[Doc] = AsyncMongoClient(
        settings.require_mongodb_url(), tz_aware=True, event_listeners=[counter]
    )
    yield counter, client[settings.database]
    await client.close()


def one(sku: str, n: int) -> tuple[OrderLine, ...]:
    return (OrderLine(sku=sku, quantity=n),)


async def holds_of(inventory: MongoInventory, sku: str) -> dict[str, Any]:
    doc = await inventory.stock.find_one({"_id": sku}) or {}
    return dict(doc.get("holds") or {})


async def test_a_batch_with_a_duplicate_a_race_and_a_refusal_treats_each_on_its_own(
    counted: tuple[CommandCounter, Any],
) -> None:
    """Twelve reserves at once, sharing inserts: six good sagas, a repeat of a saga
    decided before (the same answer, nothing held twice), two attempts of one saga
    racing (one decides, the other settles on it) and one that is short. Each gets its
    own outcome, and the counts and the holds agree."""
    counter, db = counted
    inventory = MongoInventory(database=db)
    await inventory.set_stock("a", 10)
    assert (await inventory.reserve("decided", one("a", 1))).reserved
    before = Counter(counter.counts)

    calls: list[tuple[str, tuple[OrderLine, ...]]] = [
        *((f"good-{i}", one("a", 1)) for i in range(6)),
        ("decided", one("a", 1)),
        ("race", one("a", 2)),
        ("race", one("a", 2)),
        ("short", one("a", 50)),
    ]
    outcomes = await asyncio.gather(*(inventory.reserve(s, lines) for s, lines in calls))

    by_saga: dict[str, list[ReserveOutcome]] = {}
    for (saga_id, _), outcome in zip(calls, outcomes, strict=True):
        by_saga.setdefault(saga_id, []).append(outcome)
    assert all(o.reserved for i in range(6) for o in by_saga[f"good-{i}"])
    assert by_saga["decided"] == [ReserveOutcome(reserved=True)]
    assert by_saga["race"] == [ReserveOutcome(reserved=True)] * 2
    (short,) = by_saga["short"]
    assert not short.reserved
    assert short.sku == "a"
    inserts = (Counter(counter.counts) - before)["insert"]
    assert inserts < 9, f"9 reservation inserts took {inserts} round trips: no batch formed"

    levels = await inventory.levels("a")
    held = 1 + 6 + 2  # decided, the good ones, the race (once)
    assert (levels.available, levels.reserved, levels.shipped) == (10 - held, held, 0)
    holds = await holds_of(inventory, "a")
    assert sorted(holds) == sorted(["decided", "race", *(f"good-{i}" for i in range(6))])
    assert sum(h["n"] for h in holds.values()) == held
    stored = {d["_id"]: d async for d in inventory.reservations.find({})}
    assert stored["race"]["lines"][0]["token"] == holds["race"]["t"], "counts on its hold"
    assert stored["short"]["status"] == "failed"

    shipped = await asyncio.gather(*(inventory.ship(f"good-{i}") for i in range(6)))
    await asyncio.gather(inventory.release("race"), inventory.release("decided"))
    assert all(s.shipped and s.units == 1 for s in shipped)
    levels = await inventory.levels("a")
    assert (levels.available, levels.reserved, levels.shipped) == (4, 0, 6)
    assert await holds_of(inventory, "a") == {}


async def test_payments_and_shipments_share_inserts_and_a_repeat_gets_the_same_answer(
    counted: tuple[CommandCounter, Any],
) -> None:
    counter, db = counted
    payments = MongoPayments(database=db, decline_above_cents=5_000)
    shipments = MongoShipments(database=db, undeliverable=("Atlantis",))
    amounts = {f"p-{i}": 1_000 for i in range(5)} | {"too-much": 9_000}
    before = Counter(counter.counts)

    def authorize(saga_id: str) -> Any:
        cmd = AuthorizePayment(
            order_id=saga_id, customer_id="c", amount_cents=amounts[saga_id], currency="EUR"
        )
        return payments.authorize(saga_id, cmd)

    def schedule(saga_id: str, where: str) -> Any:
        return shipments.schedule(
            saga_id, ScheduleShipment(order_id=saga_id, ship_to=where, units=1)
        )

    paid = await asyncio.gather(*(authorize(s) for s in [*amounts, "p-0"]))
    booked = await asyncio.gather(
        *(schedule(s, "Springfield") for s in ["p-0", "p-1", "p-0"]), schedule("x", "Atlantis")
    )

    assert [d["status"] for d in paid] == ["authorized"] * 5 + ["declined", "authorized"]
    assert paid[0]["authorization_id"] == paid[-1]["authorization_id"] == "auth-p-0"
    assert [d["status"] for d in booked] == ["scheduled"] * 3 + ["failed"]
    assert booked[0]["shipment_id"] == booked[2]["shipment_id"] == "ship-p-0"
    assert await payments.authorizations.count_documents({}) == 6
    assert await shipments.shipments.count_documents({}) == 3
    inserts = (Counter(counter.counts) - before)["insert"]
    assert inserts < 11, f"11 inserts took {inserts} round trips: no batch formed"


class LostAfterWriting:
    """Wraps a GroupWriter's ``write_batch``: the first batch of at least ``size`` is
    written, then the store 'fails' (the documents are stored, the callers are told
    StoreUnavailable). Every later batch is recorded."""

    def __init__(self, writes: DocumentWrites, size: int) -> None:
        self.inner = writes.inserts.write_batch
        self.size = size
        self.failed: list[Doc] = []
        self.later: list[Doc] = []
        writes.inserts.write_batch = self.write_batch  # type: ignore[method-assign]

    async def write_batch(self, items: Sequence[Doc]) -> Sequence[Exception | None]:
        outcomes = await self.inner(items)
        if not self.failed and len(items) >= self.size:
            self.failed = list(items)
            raise StoreUnavailable("injected: connection lost after the write")
        if self.failed:
            self.later.extend(items)
        return outcomes


async def test_a_batch_the_store_fails_fails_every_reserve_in_it_and_each_comes_back(
    counted: tuple[CommandCounter, Any],
) -> None:
    """At the store: every reserve of the failed batch raises (its command is not acked);
    each repeat (the redelivery) finds its decision stored and answers it, with the
    stock held once."""
    _, db = counted
    inventory = MongoInventory(database=db, write_window=0.05)
    await inventory.set_stock("a", 10)
    lost = LostAfterWriting(inventory.reservation_writes, size=3)
    sagas = [f"s-{i}" for i in range(4)]

    first = await asyncio.gather(
        *(inventory.reserve(s, one("a", 1)) for s in sagas), return_exceptions=True
    )

    assert len(lost.failed) == 4
    assert all(isinstance(r, StoreUnavailable) for r in first), first
    again = await asyncio.gather(*(inventory.reserve(s, one("a", 1)) for s in sagas))
    assert again == [ReserveOutcome(reserved=True)] * 4
    assert lost.later == [], "each repeat found its decision stored"
    levels = await inventory.levels("a")
    assert (levels.available, levels.reserved) == (6, 4)


async def test_a_failed_batch_in_the_running_inventory_acks_none_and_every_saga_completes(
    system: System,
) -> None:
    """In the service: the reserves of the failed batch were not acked, so each comes
    back, finds its decision and replies; every saga completes, stock is conserved."""
    inventory = system.inventory.inventory
    await inventory.set_stock("apple", 20)
    for writes in (inventory.reservation_writes, inventory.stock_writes):
        writes.inserts.window = writes.updates.window = 0.05
    lost = LostAfterWriting(inventory.reservation_writes, size=3)
    calls: Counter[str] = Counter()
    reserve = inventory.reserve

    async def counted_reserve(saga_id: str, lines: tuple[OrderLine, ...]) -> ReserveOutcome:
        calls[saga_id] += 1
        return await reserve(saga_id, lines)

    inventory.reserve = counted_reserve  # type: ignore[method-assign]
    sagas = await asyncio.gather(*(system.order(("apple", 1)) for _ in range(10)))

    for saga_id in sagas:
        assert (await system.settle(saga_id)).status is Status.COMPLETED
    assert len(lost.failed) >= 3
    failed = {d["_id"] for d in lost.failed}
    assert all(calls[s] >= 2 for s in failed), f"each reserve of the batch came back: {calls}"
    await system.invariants({"apple": 20}, sagas)
    levels = await system.levels("apple")
    assert (levels.available, levels.reserved, levels.shipped) == (10, 0, 10)


async def test_sigkill_of_inventory_with_a_half_filled_batch_loses_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    """Inventory runs as a process whose writes wait 200 ms for a batch, so one is
    always filling; it is SIGKILLed with reserves and ships queued and restarted:
    every saga completes and every unit is shipped once."""
    slow = settings.with_(log_format="json")
    batching = slow.with_(extra={"PARTICIPANT_WRITE_WINDOW_MS": "200"})
    procs = {
        name: ServiceProcess(name, slow, log_dir=tmp_path, instance="a")
        for name in ("orchestrator", "payment", "shipping")
    }
    procs["inventory"] = ServiceProcess("inventory", batching, log_dir=tmp_path, instance="a")
    view = InventoryService(settings)
    client = SagaClient(settings, name="test-client")
    restarted: ServiceProcess | None = None
    try:
        for proc in procs.values():
            await proc.started()
        await view.start()
        await client.connect()
        await view.inventory.set_stock("apple", 100)
        sagas = [new_saga_id() for _ in range(60)]
        for saga_id in sagas:
            await view_order(client, saga_id)
        reservations = view.inventory.reservations
        await eventually(
            lambda: reservations.count_documents({"_id": {"$in": sagas}}),
            until=lambda n: n >= 1,
            interval=0.01,
            what="a first reservation stored",
        )
        procs["inventory"].kill()
        decided = await reservations.count_documents({"_id": {"$in": sagas}})
        print(f"\nSIGKILLed inventory with {decided} of 60 reservations stored")
        assert decided < 60
        restarted = ServiceProcess("inventory", batching, log_dir=tmp_path, instance="b")
        await restarted.started()
        for saga_id in sagas:
            state = await client.wait_settled(saga_id, timeout=90)
            assert state.status is Status.COMPLETED, saga_id
        await eventually(
            lambda: view.inventory.levels("apple"),
            until=lambda lv: lv.shipped == 60,
            what="every order's stock shipped",
        )
        levels = await view.inventory.levels("apple")
        assert (levels.available, levels.reserved, levels.shipped) == (40, 0, 60)
        assert (await view.inventory.stock.find_one({"_id": "apple"}) or {}).get("holds") == {}
    finally:
        for proc in (*procs.values(), *([restarted] if restarted else [])):
            proc.stop()
        await client.close()
        if view.started:
            await view.stop()
