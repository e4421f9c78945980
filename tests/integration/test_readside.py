"""The read side: projections equal the event store, survive redelivery, rebuild the same;
low stock fires once per crossing; analytics count what happened; stuck sagas are found."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, HTTPException

from contracts import InventoryRestocked
from orchestrator.dev.embedded import free_port
from orchestrator.messaging.envelope import build_message
from orchestrator.ops.stuck import stuck_reason
from orchestrator.packs.order_fulfilment.commands import restock as send_restock
from orchestrator.packs.order_fulfilment.readside import StockReadSide
from orchestrator.packs.order_fulfilment.stock import stock_state
from orchestrator.readside import ReadSideService, extensions_of, rebuild_projections
from orchestrator.readside.summaries import fold, progress_history
from orchestrator.saga.commits import Commit
from orchestrator.saga.state import EventType, SagaEvent, Status
from tests.helpers import eventually, metric_value, movements_settled
from tests.integration.conftest import System, SystemFactory

pytestmark = pytest.mark.integration


def stock_side(readside: ReadSideService) -> StockReadSide:
    """The order pack's read side inside the read-side service."""
    found = readside.extensions["order_fulfilment"]
    assert isinstance(found, StockReadSide)
    return found


async def start_readside(system: System) -> ReadSideService:
    service = ReadSideService(system.settings)
    await system.start_extra(service)
    return service


async def restock(system: System, sku: str, units: int) -> None:
    before = (await system.levels(sku)).available
    await send_restock(system.client, sku, units)
    await eventually(
        lambda: system.levels(sku),
        until=lambda lv: lv.available == before + units,
        what=f"restock of {sku}",
    )


async def analytics_settled(readside: ReadSideService, records: int) -> None:
    """Wait until the analytics hold ``records`` records, each counted in the totals: a
    record is stored before its movement reaches the totals, and the marks go last."""

    async def state() -> tuple[int, int, bool]:
        db = readside.db
        stored = await db["readside_analytics"].count_documents({})
        counted = await db["readside_analytics"].count_documents({"pending": {"$exists": False}})
        totals = await db["readside_metrics"].find({}).to_list(None)
        return stored, counted, any(t.get("marks") for t in totals)

    await eventually(
        state,
        until=lambda s: s == (records, records, False),
        what=f"analytics recorded and counted {records} sagas",
    )


async def stock_caught_up(readside: ReadSideService, system: System, sagas: list[str]) -> None:
    """Wait until each saga's stock row is the one its progress events lead to (the
    newest event that touched its units), and no movement is under way: equal totals
    alone can hide a compensated saga whose reserve and release were not projected."""
    expected = {}
    for saga_id in sagas:
        for event in await progress_history(system.orchestrator.store, saga_id):
            if (state := stock_state(event)) is not None:
                expected[saga_id] = (event.version, state)

    async def rows() -> dict[str, tuple[int, str]]:
        cursor = readside.db["readside_stock_sagas"].find({"_id": {"$in": sagas}})
        return {d["_id"]: (d["version"], d["state"]) async for d in cursor}

    await eventually(rows, until=lambda got: got == expected, what="stock rows caught up")
    await movements_settled(readside.db)


async def expected_summary(system: System, saga_id: str) -> dict[str, Any] | None:
    summary = None
    for event in await progress_history(system.orchestrator.store, saga_id):
        summary = fold(summary, saga_id, event)
    return summary


async def run_mixed_sagas(system: System) -> list[str]:
    """Completed, failed (no stock), compensated (declined, undeliverable)."""
    await restock(system, "apple", 10)
    await restock(system, "pear", 2)
    limit = system.payment.payments.decline_above_cents
    sagas = [
        await system.order(("apple", 2)),
        await system.order(("apple", 1), ("pear", 1)),
        await system.order(("pear", 5)),
        await system.order(("apple", 1), amount_cents=limit + 1),
        await system.order(("apple", 3), ship_to="Atlantis"),
    ]
    states = [await system.settle(s) for s in sagas]
    assert [s.status for s in states] == [
        Status.COMPLETED,
        Status.COMPLETED,
        Status.FAILED,
        Status.COMPENSATED,
        Status.COMPENSATED,
    ]
    return sagas


async def test_projections_match_the_event_store_and_rebuild_identically(system: System) -> None:
    readside = await start_readside(system)
    sagas = await run_mixed_sagas(system)

    async def summaries() -> list[dict[str, Any] | None]:
        return [await readside.summaries.get(s) for s in sagas]

    expected = [await expected_summary(system, s) for s in sagas]
    await eventually(summaries, until=lambda got: got == expected, what="summaries caught up")

    async def stock_views() -> tuple[Any, Any]:
        projected = await stock_side(readside).stock.levels(["apple", "pear"])
        actual = {s: await system.levels(s) for s in ("apple", "pear")}
        return (
            {k: (v.available, v.reserved, v.shipped) for k, v in projected.items()},
            {k: (v.available, v.reserved, v.shipped) for k, v in actual.items()},
        )

    projected, _ = await eventually(
        stock_views, until=lambda p: p[0] == p[1], what="stock projection equals inventory"
    )
    await analytics_settled(readside, len(sagas))
    await stock_caught_up(readside, system, sagas)
    assert projected == {"apple": (7, 0, 3), "pear": (1, 0, 1)}

    before = {
        name: await readside.db[name].find({}).sort("_id", 1).to_list(None)
        for name in (
            "readside_sagas",
            "readside_stock_sagas",
            "readside_stock_levels",
            "readside_restocks",
            "readside_analytics",
            "readside_metrics",
        )
    }
    in_flight = await readside.summaries.in_flight_counts()
    rebuilt = await rebuild_projections(
        readside.db, extensions=extensions_of(system.settings, readside.db)
    )
    assert await readside.summaries.in_flight_counts() == in_flight
    after = {name: await readside.db[name].find({}).sort("_id", 1).to_list(None) for name in before}
    assert rebuilt == len(sagas)
    assert after == before
    assert len(after["readside_sagas"]) == 5
    assert len(after["readside_analytics"]) == 5


async def test_a_redelivered_event_changes_a_projection_once(system: System) -> None:
    readside = await start_readside(system)
    await restock(system, "apple", 10)
    saga_id = await system.order(("apple", 4))
    await system.settle(saga_id)
    await eventually(
        lambda: readside.summaries.get(saga_id),
        until=lambda d: d is not None and d["status"] == "completed" and "pending" not in d,
        what="summary completed and counted",
    )
    summary = await readside.summaries.get(saga_id)

    topology = system.settings.topology()
    history = await progress_history(system.orchestrator.store, saga_id)
    restocked = InventoryRestocked(sku="apple", units=10, restock_id="dup-restock")
    for _ in range(2):
        for version, event in enumerate(history, start=1):
            await system.client.bus.publish(
                build_message(event, message_id=f"{saga_id}:v{version}", correlation_id=saga_id),
                exchange=topology.events_exchange,
                routing_key="order_fulfilment.progressed",
                mandatory=False,
            )
        await system.client.bus.publish(
            build_message(
                restocked, message_id="dup-restock:restocked", correlation_id="dup-restock"
            ),
            exchange=topology.events_exchange,
            routing_key="inventory.restocked",
            mandatory=False,
        )

    await eventually(
        lambda: stock_side(readside).stock.levels(["apple"]),
        until=lambda lv: (
            (lv["apple"].available, lv["apple"].reserved, lv["apple"].shipped) == (16, 0, 4)
        ),
        what="extra restock applied once, the saga's stock once",
    )
    await movements_settled(readside.db)
    assert await readside.summaries.get(saga_id) == summary
    await analytics_settled(readside, 1)


async def test_low_stock_fires_once_per_crossing(system: System) -> None:
    readside = await start_readside(system)
    threshold = stock_side(readside).lowstock.threshold
    await restock(system, "kiwi", threshold + 3)

    for _ in range(5):  # down to threshold - 2: crosses once
        assert (await system.settle(await system.order(("kiwi", 1)))).status is Status.COMPLETED
    notes = await eventually(
        lambda: stock_side(readside).lowstock.notifications("kiwi"),
        until=lambda n: len(n) >= 1,
        what="first low-stock notification",
    )
    await restock(system, "kiwi", 10)  # back above: re-armed
    for _ in range(9):  # below again: a second crossing
        await system.settle(await system.order(("kiwi", 1)))

    notes = await eventually(
        lambda: stock_side(readside).lowstock.notifications("kiwi"),
        until=lambda n: len(n) >= 2,
        what="second crossing notified",
    )
    await eventually(
        lambda: readside.summaries.find(status=["completed"], limit=1000),
        until=lambda docs: len(docs) == 14,
        what="all events consumed",
    )
    notes = await eventually(  # stored first, marked delivered once sent
        lambda: stock_side(readside).lowstock.notifications("kiwi"),
        until=lambda n: all(x["delivered"] == "yes" for x in n),
        what="both notifications delivered",
    )
    assert [n["_id"] for n in notes] == ["kiwi:1", "kiwi:2"]
    assert all(n["available"] < threshold for n in notes)


async def test_analytics_count_outcomes_durations_and_compensations(system: System) -> None:
    readside = await start_readside(system)
    await run_mixed_sagas(system)
    await analytics_settled(readside, 5)

    text = await readside.analytics.metrics()

    saga = "order_fulfilment"
    outcomes = {
        o: metric_value(text, "saga_analytics_outcomes_total", saga=saga, outcome=o)
        for o in ("completed", "failed", "compensated")
    }
    assert outcomes == {"completed": 2, "failed": 1, "compensated": 2}
    assert metric_value(text, "saga_analytics_compensations_total", saga=saga) == 3
    step = {"saga": saga, "step": "reserve_stock", "outcome": "step_succeeded"}
    assert metric_value(text, "saga_analytics_step_duration_seconds_count", **step) == 4


async def test_stuck_list_finds_a_saga_without_deadline_not_healthy_ones(system: System) -> None:
    readside = await start_readside(system)
    await restock(system, "apple", 10)
    now = datetime.now(UTC)
    # A saga whose step was started without a deadline (as an older definition or a bug
    # would leave it): stored straight into the event store, then projected by a rebuild.
    stuck_id = "stuck-saga-1"
    started = SagaEvent(
        type=EventType.SAGA_STARTED,
        at=now - timedelta(hours=3),
        data={
            "saga_name": "order_fulfilment",
            "start": {
                "order_id": "o-stuck",
                "customer_id": "c",
                "amount_cents": 1,
                "currency": "EUR",
                "ship_to": "",
                "lines": [{"sku": "apple", "quantity": 1}],
            },
        },
    )
    waiting = SagaEvent(
        type=EventType.STEP_STARTED, at=now - timedelta(hours=3), step="authorize_payment"
    )
    await system.orchestrator.store.append(
        Commit(
            saga_id=stuck_id,
            version=1,
            causation_id="manual",
            events=(started, waiting),
            created_at=now,
            status="running",
        )
    )
    healthy = await system.order(("apple", 1))
    await system.settle(healthy)
    # the live consumers are done with the healthy saga before the rebuild replaces
    # their documents (a movement of theirs landing mid-rebuild would hold a lease)
    await eventually(
        lambda: readside.summaries.get(healthy),
        until=lambda d: d is not None and d["status"] == "completed" and "pending" not in d,
        what="healthy saga projected",
    )
    await analytics_settled(readside, 1)
    await stock_caught_up(readside, system, [healthy])
    await rebuild_projections(readside.db, extensions=extensions_of(system.settings, readside.db))

    found = {}
    async for summary in readside.summaries.unsettled():
        reason = stuck_reason(
            summary,
            now=datetime.now(UTC),
            threshold=timedelta(minutes=5),
            registry=system.settings.registry(),
        )
        if reason:
            found[summary["_id"]] = reason
    assert list(found) == [stuck_id]
    assert found[stuck_id].startswith("waiting for payment.payment_authorized.v1 for 3h")
    assert found[stuck_id].endswith("no deadline armed")
    healthy_running = {
        "_id": "h",
        "status": "running",
        "step": "reserve_stock",
        "updated_at": now,
        "deadline": now + timedelta(seconds=30),
    }
    assert stuck_reason(healthy_running, now=now, threshold=timedelta(minutes=5)) is None
    await asyncio.sleep(0)


async def test_low_stock_is_posted_to_the_webhook_when_one_is_set(
    make_system: SystemFactory,
) -> None:
    """With LOW_STOCK_WEBHOOK_URL set, the notification is also POSTed as JSON; a failing
    webhook is retried until it answers, and the stored record then says delivered."""
    received: list[dict[str, Any]] = []
    failures = [1]  # the first delivery attempt fails
    hook = FastAPI()

    @hook.post("/hook")
    async def accept(body: dict[str, Any]) -> dict[str, str]:
        if failures:
            failures.pop()
            raise HTTPException(503, "try later")
        received.append(body)
        return {"ok": "yes"}

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(hook, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: asyncio.sleep(0, server.started), what="webhook up")
        system = await make_system(extra={"LOW_STOCK_WEBHOOK_URL": f"http://127.0.0.1:{port}/hook"})
        readside = await start_readside(system)
        threshold = stock_side(readside).lowstock.threshold
        await restock(system, "fig", threshold)
        await system.settle(await system.order(("fig", 1)))

        await eventually(
            lambda: asyncio.sleep(0, list(received)),
            until=lambda r: len(r) == 1,
            what="webhook called",
        )
        assert received[0]["sku"] == "fig"
        assert received[0]["available"] == threshold - 1
        assert received[0]["threshold"] == threshold
        notes = await eventually(
            lambda: stock_side(readside).lowstock.notifications("fig"),
            until=lambda n: n and n[0]["delivered"] == "yes",
            what="record marked delivered",
        )
        assert [n["_id"] for n in notes] == ["fig:1"]
    finally:
        server.should_exit = True
        await serving
