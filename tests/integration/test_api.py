"""The HTTP API, served for real by uvicorn on a free port, against the running system."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from contracts import AuthorizePayment, VoidPayment
from orchestrator.ops.retention import prune_history
from orchestrator.packs.order_fulfilment.commands import restock
from orchestrator.readside import ReadSideService
from orchestrator.saga.state import EventType, Status
from tests.faults import Broken
from tests.helpers import eventually, metric_value
from tests.integration.apiserver import serve_api
from tests.integration.conftest import System, SystemFactory
from tests.integration.test_retention import finished_long_ago

pytestmark = pytest.mark.integration

TOKEN = "s3cret-operator-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def order(**changes: Any) -> dict[str, Any]:
    body = {
        "order_id": "api-1",
        "customer_id": "c-1",
        "amount_cents": 1500,
        "lines": [{"sku": "apple", "quantity": 2}],
        "ship_to": "1 Main Street",
    }
    return body | changes


@pytest.fixture
async def api(make_system: SystemFactory) -> AsyncIterator[tuple[System, httpx.AsyncClient]]:
    """The system, its read side, and the API over HTTP."""
    system = await make_system(operator_token=TOKEN)
    await system.start_extra(ReadSideService(system.settings))
    async with serve_api(system.settings, headers=AUTH) as http:
        await restock(system.client, "apple", 20)
        await eventually(
            lambda: system.levels("apple"), until=lambda lv: lv.available == 20, what="stock seeded"
        )
        yield system, http


async def test_idempotency_key_under_concurrent_duplicates_starts_one_saga(
    api: tuple[System, httpx.AsyncClient],
) -> None:
    system, http = api
    responses = await asyncio.gather(
        *(
            http.post("/orders", json=order(), headers={"Idempotency-Key": "key-1"})
            for _ in range(10)
        )
    )

    saga_ids = {r.json()["saga_id"] for r in responses}
    assert len(saga_ids) == 1
    assert sorted(r.status_code for r in responses) == [200] * 9 + [202]
    saga_id = saga_ids.pop()
    assert (await system.settle(saga_id)).status is Status.COMPLETED
    history = await system.client.history(saga_id)
    starts = [e for c in history for e in c.events if e.type is EventType.SAGA_STARTED]
    assert len(starts) == 1
    assert (await system.levels("apple")).available == 18, "stock taken once"

    other = await http.post(
        "/orders", json=order(amount_cents=1), headers={"Idempotency-Key": "key-1"}
    )
    assert other.status_code == 409
    assert "different order" in other.json()["detail"]
    missing = await http.post("/orders", json=order())
    assert missing.status_code == 422
    assert ["header", "idempotency-key"] in [e["loc"] for e in missing.json()["detail"]]


async def test_timeline_lists_events_in_order_with_attempts_and_errors(
    api: tuple[System, httpx.AsyncClient],
) -> None:
    system, http = api
    accepted = await http.post(
        "/orders", json=order(ship_to="Atlantis"), headers={"Idempotency-Key": "key-atlantis"}
    )
    saga_id = accepted.json()["saga_id"]
    await system.settle(saga_id)

    body = (await http.get(f"/sagas/{saga_id}")).json()

    assert body["status"] == "compensated"
    timeline = body["timeline"]
    assert [e["version"] for e in timeline] == sorted(e["version"] for e in timeline)
    assert [e["at"] for e in timeline] == sorted(e["at"] for e in timeline)
    refused = [e for e in timeline if e["type"] == "step_failed"]
    assert refused == [{**refused[0], "step": "schedule_shipment", "attempt": 1}]
    assert "Atlantis" in refused[0]["error"]
    assert [e["type"] for e in timeline][-1] == "saga_compensated"
    assert (await http.get("/sagas/does-not-exist")).status_code == 404

    # once retention removed it, the saga answers 410 "pruned", not 404 "unknown"; a
    # saga whose last outbox or deadline is still being flagged is busy, not pruned
    store = system.client.store
    await eventually(
        store.live_work,
        until=lambda w: (w.pending_outbox, w.active_deadlines) == (0, 0),
        what="the saga's outboxes and deadlines flagged done",
    )
    await finished_long_ago(system, saga_id)
    report = await prune_history(
        store, store.commits.database, older_than=timedelta(days=30), now=datetime.now(UTC)
    )
    assert report.sagas == 1
    gone = await http.get(f"/sagas/{saga_id}")
    assert gone.status_code == 410
    assert "pruned" in gone.json()["detail"]


async def test_lists_stock_metrics_and_bad_requests(api: tuple[System, httpx.AsyncClient]) -> None:
    system, http = api
    accepted = await http.post("/orders", json=order(), headers={"Idempotency-Key": "k-list"})
    await system.settle(accepted.json()["saga_id"])
    listed = await eventually(
        lambda: http.get("/sagas", params={"status": "completed"}),
        until=lambda r: len(r.json()) == 1,
        what="summary listed",
    )
    assert listed.json()[0]["saga_id"] == accepted.json()["saga_id"]
    await eventually(
        lambda: http.get("/stock/apple"),
        until=lambda r: (
            r.status_code == 200
            and r.json() == {"sku": "apple", "available": 18, "reserved": 0, "shipped": 2}
        ),
        what="stock projected: the restock and the saga",
    )
    metrics = await eventually(
        lambda: http.get("/metrics"),
        until=lambda r: (
            metric_value(
                r.text,
                "saga_analytics_outcomes_total",
                saga="order_fulfilment",
                outcome="completed",
            )
            == 1
            and metric_value(r.text, "saga_in_flight", status="running") == 0
        ),
        what="metrics counted, the saga no longer in flight",
    )
    step = {"saga": "order_fulfilment", "step": "reserve_stock", "outcome": "step_succeeded"}
    assert metric_value(metrics.text, "saga_analytics_step_duration_seconds_count", **step) == 1
    assert metrics.headers["content-type"].startswith("text/plain")

    assert (await http.get("/sagas", params={"status": "nonsense"})).status_code == 422
    assert (await http.get("/stock/bad sku!")).status_code == 422
    assert (
        await http.post("/orders", json={"order_id": ""}, headers={"Idempotency-Key": "x"})
    ).status_code == 422
    assert (await http.get("/health")).json() == {"status": "ok"}
    assert (await http.get("/ready")).json() == {"store": "ok", "broker": "ok"}
    assert "/orders" in (await http.get("/openapi.json")).json()["paths"]


async def test_changes_need_the_operator_token(api: tuple[System, httpx.AsyncClient]) -> None:
    system, http = api
    key = {"Idempotency-Key": "restock-1"}
    async with httpx.AsyncClient(base_url=http.base_url) as anonymous:
        refused = await anonymous.post("/stock/apple/restock", json={"units": 5}, headers=key)
        assert refused.status_code == 401
        wrong = await anonymous.post(
            "/stock/apple/restock",
            json={"units": 5},
            headers=key | {"Authorization": "Bearer nope"},
        )
        assert wrong.status_code == 401
        assert (await anonymous.post("/sagas/x/resume")).status_code == 401

    done = await http.post("/stock/apple/restock", json={"units": 5}, headers=key)
    assert done.status_code == 202
    await eventually(
        lambda: system.levels("apple"), until=lambda lv: lv.available == 25, what="restocked"
    )
    assert (
        await http.post("/stock/apple/restock", json={"units": -1}, headers=key)
    ).status_code == 422


async def test_resume_a_parked_saga_over_http(make_system: SystemFactory) -> None:
    """A saga parked by a failing compensation is resumed through the API."""
    system = await make_system(
        operator_token=TOKEN, retry_delays=(0.1,), step_timeout=1.0, step_max_sends=1
    )
    await system.inventory.inventory.set_stock("apple", 5)
    broken = Broken(system.payment.void)
    system.payment.on_command(AuthorizePayment, Broken(system.payment.authorize))
    system.payment.on_command(VoidPayment, broken)
    saga_id = await system.order(("apple", 1))
    parked = await system.settle(saga_id)
    assert parked.status is Status.COMPENSATION_FAILED
    async with serve_api(system.settings) as http:
        broken.fixed = True
        resumed = await http.post(f"/sagas/{saga_id}/resume", headers=AUTH)
        assert resumed.status_code == 200, resumed.text
        state = await system.settle(saga_id)
        assert state.status is Status.COMPENSATED
        again = await http.post(f"/sagas/{saga_id}/resume", headers=AUTH)
        assert again.status_code == 409
    await system.invariants({"apple": 5}, [saga_id])


async def test_dead_letters_listed_inspected_replayed_and_discarded_over_http(
    make_system: SystemFactory,
) -> None:
    """A command dead-lettered while payment was broken: listed, inspected, a dry run
    changes nothing, a replay completes its saga; discarding needs a reason."""
    system = await make_system(
        operator_token=TOKEN, retry_delays=(0.1,), step_timeout=300.0, step_max_sends=1
    )
    await system.inventory.inventory.set_stock("apple", 5)
    broken = Broken(system.payment.authorize)
    system.payment.on_command(AuthorizePayment, broken)
    saga_id = await system.order(("apple", 1))
    async with serve_api(system.settings) as http:
        queues = await eventually(
            lambda: http.get("/dead-letters", headers=AUTH),
            until=lambda r: any(q["messages"] == 1 for q in r.json()),
            what="the command dead-lettered",
        )
        depth = {q["work_queue"].split(".", 1)[1]: q["messages"] for q in queues.json()}
        assert depth["payment.commands"] == 1
        letters = (await http.get("/dead-letters/payment.commands", headers=AUTH)).json()
        assert [(x["saga_id"], x["reason"]) for x in letters] == [(saga_id, "retries_exhausted")]
        assert letters[0]["body"]["amount_cents"] == 1000
        assert (await http.get("/dead-letters/nope", headers=AUTH)).status_code == 404

        broken.fixed = True
        selection = {"saga_id": saga_id}
        assert (
            await http.post("/dead-letters/payment.commands/replay", json=selection)
        ).status_code == 401
        dry = await http.post(
            "/dead-letters/payment.commands/replay",
            json=selection | {"dry_run": True},
            headers=AUTH,
        )
        assert dry.json()["ok"]
        assert [o["status"] for o in dry.json()["outcomes"]] == ["would"]
        assert len((await http.get("/dead-letters/payment.commands", headers=AUTH)).json()) == 1
        assert (await system.client.state(saga_id)).status is Status.RUNNING

        done = await http.post(
            "/dead-letters/payment.commands/replay", json=selection, headers=AUTH
        )
        assert [o["status"] for o in done.json()["outcomes"]] == ["done"]
        assert (await system.settle(saga_id)).status is Status.COMPLETED
        assert (await http.get("/dead-letters/payment.commands", headers=AUTH)).json() == []

        bad = await http.post(
            "/dead-letters/payment.commands/discard", json={"all": True}, headers=AUTH
        )
        assert bad.status_code == 422, "a reason is required"
