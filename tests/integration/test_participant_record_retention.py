"""Issue 15: the participants' dedupe records of saga commands have a retention.

A record gets ``settled_at`` on the write that makes it final (nothing the saga can
still send needs it), and a TTL index on ``settled_at`` removes it after
``PARTICIPANT_RECORD_RETENTION_SECONDS``; a live record (stock still held, an
authorization still to capture or void, a captured payment a refund reads) has no
``settled_at`` and never expires. The tests assert the fields and the index, not the
TTL monitor's pass (60 s on MongoDB)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from contracts import AuthorizePayment, OrderLine, ScheduleShipment
from orchestrator.settings import Settings
from participants.inventory.store import MongoInventory
from participants.payment.service import MongoPayments
from participants.shipping.service import MongoShipments
from tests.integration.conftest import SystemFactory

pytestmark = pytest.mark.integration

Db = AsyncDatabase[dict[str, Any]]
APPLES = (OrderLine(sku="apple", quantity=2),)
TTL = "expireAfterSeconds"


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Db]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        settings.require_mongodb_url(), tz_aware=True
    )
    yield client[settings.database]
    await client.close()


async def ttl_indexes(db: Db, name: str) -> list[tuple[Any, int]]:
    """(key, expireAfterSeconds) of every TTL index of collection ``name``."""
    indexes = await db[name].index_information()
    return [(i["key"], i[TTL]) for i in indexes.values() if TTL in i]


async def settled(db: Db, name: str) -> dict[str, bool]:
    """Per record of ``name``: whether it has a ``settled_at`` date (it may expire)."""
    docs = await db[name].find({}, {"settled_at": 1}).to_list(None)
    return {d["_id"]: isinstance(d.get("settled_at"), datetime) for d in docs}


async def test_inventory_reservations_expire_once_released_shipped_or_failed(db: Db) -> None:
    """Released, shipped and failed reservations and a release's marker get
    ``settled_at``; a reservation still holding stock does not, a repeated reserve leaves
    it so. The TTL index has the configured seconds, and a changed retention changes it."""
    inventory = MongoInventory(database=db, record_retention_seconds=3600)
    await inventory.ensure_indexes()
    await inventory.set_stock("apple", 10)

    assert (await inventory.reserve("holding", APPLES)).reserved
    assert (await inventory.reserve("holding", APPLES)).reserved
    assert (await inventory.reserve("released", APPLES)).reserved
    await inventory.release("released", APPLES)
    assert (await inventory.reserve("shipped", APPLES)).reserved
    assert (await inventory.ship("shipped")).shipped
    assert not (await inventory.reserve("failed", (OrderLine(sku="apple", quantity=50),))).reserved
    await inventory.release("released-first", APPLES)

    assert await settled(db, "inventory_reservations") == {
        "holding": False,
        "released": True,
        "shipped": True,
        "failed": True,
        "released-first": True,
    }
    assert await ttl_indexes(db, "inventory_reservations") == [([("settled_at", 1)], 3600)]
    await MongoInventory(database=db, record_retention_seconds=7200).ensure_indexes()
    assert await ttl_indexes(db, "inventory_reservations") == [([("settled_at", 1)], 7200)]


def authorize(order: str, cents: int = 1_000) -> AuthorizePayment:
    return AuthorizePayment(order_id=order, customer_id="c", amount_cents=cents)


async def test_payments_expire_once_voided_or_declined_never_while_authorized_or_captured(
    db: Db,
) -> None:
    """Voided and declined payments (and a void's marker) get ``settled_at``; an
    authorization still to capture or void does not, nor a captured payment: a refund of
    the order reads its captured amount, whenever the return comes."""
    payments = MongoPayments(database=db, decline_above_cents=5_000, retention_seconds=3600)
    await payments.ensure_indexes()

    await payments.authorize("authorized", authorize("o1"))
    await payments.authorize("captured", authorize("o2"))
    await payments.capture("captured")
    await payments.authorize("voided", authorize("o3"))
    await payments.void("voided")
    await payments.authorize("declined", authorize("o4", cents=9_000))
    await payments.void("voided-first")

    assert await settled(db, "payment_authorizations") == {
        "authorized": False,
        "captured": False,
        "voided": True,
        "declined": True,
        "voided-first": True,
    }
    assert await ttl_indexes(db, "payment_authorizations") == [([("settled_at", 1)], 3600)]
    await MongoPayments(database=db, decline_above_cents=0, retention_seconds=7200).ensure_indexes()
    assert await ttl_indexes(db, "payment_authorizations") == [([("settled_at", 1)], 7200)]


def shipment(order: str, ship_to: str = "1 Main Street") -> ScheduleShipment:
    return ScheduleShipment(order_id=order, ship_to=ship_to, units=2)


async def test_every_shipment_record_is_settled_when_written(db: Db) -> None:
    """Scheduled, failed and cancelled shipments (and a cancel's marker) get
    ``settled_at`` at once: a cancel needs nothing from the record (without it, it leaves
    the marker and answers the same), so no shipment record is live. A cancel restarts
    the retention from its own write."""
    shipments = MongoShipments(database=db, undeliverable=("Atlantis",), retention_seconds=3600)
    await shipments.ensure_indexes()

    await shipments.schedule("scheduled", shipment("o1"))
    await shipments.schedule("failed", shipment("o2", ship_to="Atlantis"))
    await shipments.schedule("cancelled", shipment("o3"))
    booked = await shipments.get("cancelled")
    await shipments.cancel("cancelled")
    await shipments.cancel("cancelled-first")

    assert await settled(db, "shipping_shipments") == {
        "scheduled": True,
        "failed": True,
        "cancelled": True,
        "cancelled-first": True,
    }
    cancelled = await shipments.get("cancelled")
    assert booked is not None
    assert cancelled is not None
    assert cancelled["settled_at"] >= booked["settled_at"]
    assert await ttl_indexes(db, "shipping_shipments") == [([("settled_at", 1)], 3600)]
    await MongoShipments(database=db, undeliverable=(), retention_seconds=7200).ensure_indexes()
    assert await ttl_indexes(db, "shipping_shipments") == [([("settled_at", 1)], 7200)]


@pytest.mark.parametrize("shipping_flavour", ["aio-pika", "faststream"])
async def test_every_participant_sets_up_its_retention_from_the_setting(
    make_system: SystemFactory,
) -> None:
    """The services (both shipping flavours) create the TTL indexes at start-up with
    ``PARTICIPANT_RECORD_RETENTION_SECONDS``."""
    system = await make_system(extra={"PARTICIPANT_RECORD_RETENTION_SECONDS": "5400"})
    db = system.inventory.db
    for name in (
        "inventory_reservations",
        "payment_authorizations",
        "shipping_shipments",
        "returns_decisions",
    ):
        assert await ttl_indexes(db, name) == [([("settled_at", 1)], 5400)], name
