"""The ``saga`` command line against the live system, each command in its own process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.packs.order_fulfilment.commands import restock
from orchestrator.readside import ReadSideService
from orchestrator.saga.state import Status
from tests.helpers import eventually, run_cli
from tests.integration.conftest import System

pytestmark = pytest.mark.integration


async def test_order_status_stock_and_publish(system: System, tmp_path: Path) -> None:
    s = system.settings
    code, out, err = await run_cli(s, "stock", "apple", "--add", "10")
    assert code == 0, err
    assert "restock" in out
    await eventually(
        lambda: system.levels("apple"),
        until=lambda lv: lv.available == 10,
        what="restocked through inventory",
    )

    code, out, err = await run_cli(s, "order", "apple:3", "--saga-id", "cli-saga-1")
    assert code == 0, err
    assert "saga cli-saga-1 started" in out
    assert "reserve_stock      succeeded" in out
    assert out.rstrip().endswith("=> completed")

    code, out, _ = await run_cli(s, "status", "cli-saga-1")
    assert code == 0
    assert "saga cli-saga-1 (order_fulfilment): completed" in out
    assert out.count("succeeded") == 5, "five steps: reserve, authorize, schedule, capture, ship"

    code, out, _ = await run_cli(s, "stock", "apple")
    assert code == 0
    assert out.splitlines()[1].split() == ["apple", "7", "0", "3"]

    command = tmp_path / "order.json"
    command.write_text(
        json.dumps(
            {
                "type": "orders.place_order.v1",
                "correlation_id": "raw-saga-1",
                "body": {
                    "order_id": "raw-1",
                    "customer_id": "c",
                    "amount_cents": 10,
                    "lines": [{"sku": "apple", "quantity": 1}],
                },
            }
        )
    )
    code, out, err = await run_cli(s, "publish", str(command))
    assert code == 0, err
    assert (await system.settle("raw-saga-1")).status is Status.COMPLETED

    command.write_text(json.dumps({"type": "orders.place_order.v1", "body": {"lines": []}}))
    code, _, err = await run_cli(s, "publish", str(command))
    assert code == 2
    assert "schema_violation" in err

    code, _, err = await run_cli(s, "order", "apple:0")
    assert code == 2
    assert "greater than 0" in err
    code, _, err = await run_cli(s, "status", "no-such-saga")
    assert code == 1
    assert "no saga no-such-saga" in err


async def test_sagas_stuck_and_rebuild(system: System) -> None:
    readside = ReadSideService(system.settings)
    await system.start_extra(readside)
    s = system.settings
    await restock(system.client, "pear", 5)
    await eventually(
        lambda: system.levels("pear"), until=lambda lv: lv.available == 5, what="restocked"
    )
    done = await system.order(("pear", 1))
    refused = await system.order(("pear", 9))
    await system.settle(done)
    await system.settle(refused)
    await eventually(
        lambda: readside.summaries.find(limit=10),
        until=lambda d: (
            {x["_id"]: x["status"] for x in d} == {done: "completed", refused: "failed"}
            and not any("pending" in x for x in d)
        ),
        what="both summaries at their outcome",
    )

    code, out, _ = await run_cli(s, "sagas", "--status", "failed")
    assert code == 0
    assert refused in out
    assert done not in out

    code, out, _ = await run_cli(s, "stuck")
    assert code == 0
    assert "no stuck sagas" in out

    code, out, err = await run_cli(s, "projections", "rebuild")
    assert code == 0, err
    assert "rebuilt the projections of 2 sagas" in out
    assert (await readside.summaries.get(done) or {}).get("status") == "completed"

    code, _, err = await run_cli(s, "sagas", "--older-than", "soon")
    assert code == 2
    assert "not a duration" in err
