"""Processes killed with SIGKILL mid-stream, and a broker restart, with sagas in flight."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from contracts import ScheduleShipment
from orchestrator.client import SagaClient
from orchestrator.dev.processes import ServiceProcess
from orchestrator.saga.state import Status
from orchestrator.settings import Settings
from participants.inventory import InventoryService
from tests.faults import HeldUntil
from tests.helpers import eventually
from tests.integration.conftest import System

pytestmark = pytest.mark.integration

STOCK = {"apple": 80, "pear": 40}


def orders(n: int) -> list[tuple[tuple[str, int], ...]]:
    """A mix that completes, fails for stock, and compensates."""
    return [(("apple", 1),) if i % 3 else (("apple", 1), ("pear", 1)) for i in range(n)]


@pytest.fixture
async def processes(
    settings: Settings, tmp_path: Path
) -> AsyncIterator[Callable[[str, str], ServiceProcess]]:
    """Factory for service processes; all are stopped after the test."""
    started: list[ServiceProcess] = []

    def make(service: str, instance: str) -> ServiceProcess:
        proc = ServiceProcess(
            service, settings.with_(log_format="json"), log_dir=tmp_path, instance=instance
        )
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.stop()


SETTLED = [s.value for s in Status if s.settled]


async def settled_count(client: SagaClient) -> int:
    """How many sagas are terminal or parked (one query; the embedded server's distinct()
    ignores its filter, so the ids are collected here)."""
    cursor = client.store.commits.find({"status": {"$in": SETTLED}}, {"saga_id": 1})
    return len({doc["saga_id"] async for doc in cursor})


async def place(system: System, n: int) -> list[str]:
    """Stock up and place ``n`` orders at once."""
    for sku, units in STOCK.items():
        await system.inventory.inventory.set_stock(sku, units)
    return list(
        await asyncio.gather(
            *(
                system.order(*lines, ship_to="Atlantis" if i % 7 == 0 else "1 Main Street")
                for i, lines in enumerate(orders(n))
            )
        )
    )


@pytest.mark.parametrize("victim", ["orchestrator", "inventory"])
async def test_service_killed_with_sigkill_mid_stream_loses_nothing(
    settings: Settings, processes: Callable[[str, str], ServiceProcess], victim: str
) -> None:
    """100 sagas in flight, one service process SIGKILLed and restarted: all 100 settle,
    stock is conserved, no authorization is left dangling."""
    procs = {
        name: processes(name, "a") for name in ("orchestrator", "inventory", "payment", "shipping")
    }
    for proc in procs.values():
        await proc.started()
    # In-process handle on the stores for seeding and checks; it consumes nothing.
    system_view = InventoryService(settings)
    system_view.consumers.clear()
    client = SagaClient(settings, name="test-client")
    await client.connect()
    try:
        await system_view.start()
        system_view.consumers.clear()
        view = System(
            settings=settings,
            client=client,
            orchestrator=None,  # type: ignore[arg-type]
            inventory=system_view,
            payment=None,
            shipping=None,
        )  # type: ignore[arg-type]
        sagas = await place(view, 100)
        await eventually(
            lambda: settled_count(client),
            until=lambda n: n >= 1,
            interval=0.01,
            what="a first saga settled",
        )
        procs[victim].kill()
        in_flight = 100 - await settled_count(client)
        print(f"\nSIGKILLed {victim} with {in_flight} of 100 sagas unsettled")
        assert in_flight > 0, "the kill happened with sagas in flight"

        restarted = processes(victim, "b")
        await restarted.started()
        report = await view.invariants(STOCK, sagas, timeout=120)
        assert sum(report.outcomes.values()) == 100
        print(f"after restart: {report}")
    finally:
        await client.close()
        await system_view.stop()


def rabbitmqctl(*args: str) -> None:
    """Run rabbitmqctl on the local node (it returns when the node has done it)."""
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=180)


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs a local RabbitMQ node")
async def test_broker_restart_with_sagas_in_flight_loses_nothing(system: System) -> None:
    """The broker's application is stopped and started while 100 sagas run: every service
    reconnects, re-declares and resumes consuming; every saga settles and nothing is lost.

    Shipping holds its commands until the broker is down, so sagas are certainly in flight
    across the restart and handlers finish while it is away."""
    broker_stopping = asyncio.Event()

    async def until_broker_stops(_saga_id: str) -> None:
        await broker_stopping.wait()

    held = HeldUntil(system.shipping.schedule, until_broker_stops)
    system.shipping.on_command(ScheduleShipment, held)
    sagas = await place(system, 100)
    await eventually(
        lambda: asyncio.sleep(0, held.held),
        until=lambda n: n >= 10,
        what="shipping commands held in flight",
    )
    try:
        await asyncio.to_thread(rabbitmqctl, "stop_app")
        in_flight = 100 - await settled_count(system.client)
        broker_stopping.set()  # held handlers now try to reply to a broker that is down
    finally:
        await asyncio.to_thread(rabbitmqctl, "start_app")
        await asyncio.to_thread(rabbitmqctl, "await_startup")
    print(f"\nbroker restarted with {in_flight} of 100 sagas unsettled")
    assert in_flight >= 10

    report = await system.invariants(STOCK, sagas, timeout=180)
    assert sum(report.outcomes.values()) == 100
    print(f"after the broker restart: {report}")
