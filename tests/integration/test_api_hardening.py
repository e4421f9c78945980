"""The API refuses bad input before it stores anything, retries are safe, bodies are
bounded, and nothing is open without a token."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from orchestrator.readside import ReadSideService
from orchestrator.saga.state import Status
from tests.helpers import eventually
from tests.integration.apiserver import serve_api
from tests.integration.conftest import SystemFactory
from tests.integration.test_api import order

pytestmark = pytest.mark.integration

OPERATOR = "op-token-hardening"
CLIENT = "client-token-hardening"
READER = "read-token-hardening"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_bad_orders_are_refused_before_the_key_is_stored(
    make_system: SystemFactory,
) -> None:
    """Duplicate SKUs, an amount beyond int64, a bool or a numeric string for a number:
    422 from both start routes, and the key is not burned: the corrected order with the
    same key is accepted and its saga completes."""
    system = await make_system(operator_token=OPERATOR)
    await system.inventory.inventory.set_stock("apple", 10)
    twice = [{"sku": "apple", "quantity": 1}, {"sku": "apple", "quantity": 2}]
    bad_bodies = [
        order(lines=twice),
        order(amount_cents=10**30),
        order(amount_cents=False),
        order(amount_cents="1500"),
        order(lines=[{"sku": "apple", "quantity": True}]),
        order(lines=[{"sku": "apple", "quantity": 2.5}]),
    ]
    async with serve_api(system.settings, headers=bearer(OPERATOR)) as http:
        for path in ("/orders", "/definitions/order_fulfilment/sagas"):
            for body in bad_bodies:
                refused = await http.post(path, json=body, headers={"Idempotency-Key": "k-1"})
                assert refused.status_code == 422, (path, body, refused.text)
        assert "one line" in str(
            (
                await http.post("/orders", json=bad_bodies[0], headers={"Idempotency-Key": "k-1"})
            ).json()["detail"]
        )
        assert (
            await system.client.store.commits.database["api_idempotency_keys"].count_documents({})
            == 0
        )

        accepted = await http.post("/orders", json=order(), headers={"Idempotency-Key": "k-1"})
        assert accepted.status_code == 202, accepted.text
    state = await system.settle(accepted.json()["saga_id"])
    assert state.status is Status.COMPLETED
    assert (await system.levels("apple")).shipped == 2


async def test_a_retried_restock_adds_its_units_once(make_system: SystemFactory) -> None:
    """Restocking takes an Idempotency-Key: the same request sent three times (two at
    once) adds the units once; the key with other units is a 409; no key is a 422."""
    system = await make_system(operator_token=OPERATOR)
    await system.inventory.inventory.set_stock("pear", 1)
    key = {"Idempotency-Key": "restock-pear-1"}
    async with serve_api(system.settings, headers=bearer(OPERATOR)) as http:
        first = await asyncio.gather(
            *(http.post("/stock/pear/restock", json={"units": 5}, headers=key) for _ in range(2))
        )
        assert sorted(r.status_code for r in first) == [200, 202]
        again = await http.post("/stock/pear/restock", json={"units": 5}, headers=key)
        assert again.status_code == 200
        assert again.json()["restock_id"] == first[0].json()["restock_id"]
        other = await http.post("/stock/pear/restock", json={"units": 6}, headers=key)
        assert other.status_code == 409
        assert "different restock" in other.json()["detail"]
        assert (await http.post("/stock/pear/restock", json={"units": 5})).status_code == 422
        marker = await http.post(
            "/stock/pear/restock", json={"units": 100}, headers={"Idempotency-Key": "marker"}
        )
        assert marker.status_code == 202
    # The marker restock comes after the retried ones: once it shows, they all have.
    levels = await eventually(
        lambda: system.levels("pear"), until=lambda lv: lv.available > 100, what="restocked"
    )
    assert levels.available == 1 + 5 + 100


async def test_request_bodies_larger_than_the_limit_are_refused(
    make_system: SystemFactory,
) -> None:
    """Over SAGA_MAX_BODY_BYTES: 413, with or without Content-Length, before any key is
    stored; a body under the limit passes."""
    system = await make_system(operator_token=OPERATOR, max_body_bytes=4096)
    huge = order(ship_to="x" * 400, customer_id="c" * 100)
    huge["lines"] = [{"sku": f"sku-{i:060d}", "quantity": 1} for i in range(100)]
    key = {"Idempotency-Key": "big-1"}

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 1000

    async with serve_api(system.settings, headers=bearer(OPERATOR)) as http:
        declared = await http.post("/orders", json=huge, headers=key)
        assert declared.status_code == 413, declared.text
        assert "larger than 4096 bytes" in declared.json()["detail"]
        streamed = await http.post(
            "/orders", content=chunks(), headers=key | {"Content-Type": "application/json"}
        )
        assert streamed.status_code == 413
        assert (await http.post("/orders", json=order(), headers=key)).status_code == 202
    keys = system.client.store.commits.database["api_idempotency_keys"]
    assert [d["_id"] async for d in keys.find({})] == ["big-1"]


async def test_nothing_is_open_without_its_token(make_system: SystemFactory) -> None:
    """Operator: everything. Client: starts only. Reader: reads only. No token, a wrong
    one, or a role without a configured token: 401. Health, readiness and metrics stay
    open; SAGA_READS_OPEN=true opens reads, and only reads."""
    system = await make_system(
        operator_token=OPERATOR,
        extra={"SAGA_CLIENT_TOKEN": CLIENT, "SAGA_READ_TOKEN": READER},
    )
    await system.start_extra(ReadSideService(system.settings))
    key = {"Idempotency-Key": "auth-1"}

    async with serve_api(system.settings) as http:

        async def code(method: str, path: str, token: str | None, **kw: Any) -> int:
            headers = kw.pop("headers", {}) | (bearer(token) if token else {})
            response = await http.request(method, path, headers=headers, **kw)
            return response.status_code

        for token in (None, "wrong", READER):
            assert await code("POST", "/orders", token, json=order(), headers=key) == 401
        assert await code("POST", "/orders", CLIENT, json=order(), headers=key) == 202
        assert await code("POST", "/orders", OPERATOR, json=order(), headers=key) == 200
        generic = "/definitions/order_fulfilment/sagas"
        assert await code("POST", generic, CLIENT, json=order(), headers=key) == 200
        for path in ("/sagas", "/sagas/stuck", "/dead-letters", "/stock", "/stock/apple"):
            assert await code("GET", path, None) == 401, path
            assert await code("GET", path, CLIENT) == 401, path
            assert await code("GET", path, READER) in (200, 404), path
            assert await code("GET", path, OPERATOR) in (200, 404), path
        restock = {"json": {"units": 1}, "headers": {"Idempotency-Key": "r-auth"}}
        for token in (CLIENT, READER):
            assert await code("POST", "/stock/apple/restock", token, **restock) == 401
        assert await code("POST", "/stock/apple/restock", OPERATOR, **restock) == 202
        for path in ("/health", "/ready", "/metrics", "/definitions", "/openapi.json"):
            assert await code("GET", path, None) == 200, path

    for settings, open_reads in (
        (system.settings.with_(operator_token=None, extra={}), False),
        (system.settings.with_(operator_token=None, extra={"SAGA_READS_OPEN": "true"}), True),
    ):
        async with serve_api(settings) as http:
            refused = await http.post("/orders", json=order(), headers={"Idempotency-Key": "x"})
            assert refused.status_code == 401
            assert "no token is configured" in refused.json()["detail"]
            assert "SAGA_CLIENT_TOKEN" in refused.json()["detail"]
            listed = await http.get("/sagas")
            assert listed.status_code == (200 if open_reads else 401)


async def test_numeric_query_parameters_are_bounded_and_statuses_documented(
    make_system: SystemFactory,
) -> None:
    """A huge age no longer overflows the date arithmetic (500): it is a 422, as are
    the other unbounded numbers; every secured operation documents 401 and its error
    body; a discard with both "all" and a filter takes the filter."""
    system = await make_system(operator_token=OPERATOR)
    async with serve_api(system.settings, headers=bearer(OPERATOR)) as http:
        for path, params in (
            ("/sagas", {"older_than_seconds": "1.3e242"}),
            ("/sagas", {"limit": "955000"}),
            ("/sagas/stuck", {"threshold_seconds": "1e300"}),
            ("/dead-letters/inventory.commands", {"limit": "0"}),
            ("/stock", {"limit": "5000"}),
        ):
            answer = await http.get(path, params=params)
            assert answer.status_code == 422, (path, params, answer.text)
        both = await http.post(
            "/dead-letters/inventory.commands/discard",
            json={"all": True, "saga_id": "nobody", "reason": "cleanup", "dry_run": True},
        )
        assert both.status_code == 200, both.text
        assert both.json()["selector"] == "saga id nobody"
        neither = await http.post("/dead-letters/inventory.commands/discard", json={"reason": "x"})
        assert neither.status_code == 422
        spec = (await http.get("/openapi.json")).json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if operation.get("security"):
                error = operation["responses"]["401"]
                assert error["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/ErrorBody"
                }, (method, path)
