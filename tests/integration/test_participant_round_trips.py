"""Issue 11: store round trips per participant command, counted by a pymongo command
listener on the participants' client (as ``orchestrator.dev.bench.probe`` counts them).

The bounds are the design: inventory makes one conditional write per SKU plus one
write of the reservation document for reserve, ship and release; payment and shipping
settle each command in one write. The happy paths read nothing."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from contracts import AuthorizePayment, OrderLine, ScheduleShipment
from orchestrator.dev.bench.probe import CommandCounter
from orchestrator.settings import Settings
from participants.inventory.store import MongoInventory
from participants.payment.service import MongoPayments
from participants.shipping.service import MongoShipments

pytestmark = pytest.mark.integration

LINES = (OrderLine(sku="a", quantity=2), OrderLine(sku="b", quantity=1))
READS = ("find", "aggregate", "count", "getMore", "distinct")


@dataclass
class Counted:
    """Stores on one client whose commands are counted."""

    counter: CommandCounter
    inventory: MongoInventory
    payments: MongoPayments
    shipments: MongoShipments

    async def trips(self, operation: Callable[[], Awaitable[Any]]) -> Counter[str]:
        """The commands ``operation`` sent, by name."""
        before = Counter(self.counter.counts)
        await operation()
        return Counter(self.counter.counts) - before


def _total(counts: Counter[str]) -> int:
    return sum(counts.values())


def _reads(counts: Counter[str]) -> int:
    return sum(n for name, n in counts.items() if name in READS)


@pytest.fixture
async def counted(settings: Settings) -> AsyncIterator[Counted]:
    counter = CommandCounter()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        settings.require_mongodb_url(), tz_aware=True, event_listeners=[counter]
    )
    db = client[settings.database]
    inventory = MongoInventory(database=db)
    for sku in ("a", "b"):
        await inventory.set_stock(sku, 10)
    yield Counted(
        counter=counter,
        inventory=inventory,
        payments=MongoPayments(database=db, decline_above_cents=500_000),
        shipments=MongoShipments(database=db, undeliverable=("Atlantis",)),
    )
    await client.close()


async def test_inventory_reserve_ship_and_release_are_one_write_per_sku_plus_one(
    counted: Counted,
) -> None:
    inventory = counted.inventory
    reserve = await counted.trips(lambda: inventory.reserve("s1", LINES))
    ship = await counted.trips(lambda: inventory.ship("s1"))
    await inventory.reserve("s2", LINES)
    release = await counted.trips(lambda: inventory.release("s2", LINES))
    print(f"inventory reserve={dict(reserve)} ship={dict(ship)} release={dict(release)}")

    for what, counts in (("reserve", reserve), ("ship", ship), ("release", release)):
        assert _total(counts) <= len(LINES) + 1, (what, counts)
        assert _reads(counts) == 0, (what, counts)
    levels = [await inventory.levels(s) for s in ("a", "b")]
    assert [(x.available, x.reserved, x.shipped) for x in levels] == [(8, 0, 2), (9, 0, 1)]


async def test_payment_and_shipping_settle_each_command_in_one_write(counted: Counted) -> None:
    payments, shipments = counted.payments, counted.shipments
    pay = AuthorizePayment(order_id="o1", customer_id="c1", amount_cents=100)
    ship = ScheduleShipment(order_id="o1", ship_to="1 Main Street", units=3)
    trips = {
        "authorize": await counted.trips(lambda: payments.authorize("s1", pay)),
        "capture": await counted.trips(lambda: payments.capture("s1")),
        "schedule": await counted.trips(lambda: shipments.schedule("s1", ship)),
    }
    await payments.authorize("s2", pay)
    await shipments.schedule("s2", ship)
    trips["void"] = await counted.trips(lambda: payments.void("s2"))
    trips["cancel"] = await counted.trips(lambda: shipments.cancel("s2"))
    print({k: dict(v) for k, v in trips.items()})

    for what, counts in trips.items():
        assert _total(counts) == 1, (what, counts)
    assert (await payments.get("s1") or {})["status"] == "captured"
    assert (await payments.get("s2") or {})["status"] == "voided"
    assert (await shipments.get("s2") or {})["status"] == "cancelled"
