"""/metrics, /health and /ready of the services, scraped over HTTP while a saga runs."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from contracts import ReserveStock
from orchestrator.dev.embedded import free_port
from orchestrator.dev.processes import ServiceProcess
from orchestrator.observability.probes import ProbeServer
from orchestrator.saga.state import Status
from orchestrator.settings import Settings
from tests.helpers import eventually
from tests.integration.conftest import System, SystemFactory

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(http: httpx.AsyncClient) -> Samples:
    """Every sample of one scrape, by name and labels."""
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every sample of ``name`` that has ``labels`` (and any others)."""
    want = set(labels.items())
    return sum(v for (n, tags), v in samples.items() if n == name and want <= tags)


@pytest.fixture
async def metered(make_system: SystemFactory) -> AsyncIterator[tuple[System, httpx.AsyncClient]]:
    """The system with its services' probes on a free port (one server per process)."""
    port = free_port()
    system = await make_system(metrics_port=port)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        yield system, http


async def test_a_saga_shows_in_the_metrics_and_the_services_are_ready(
    metered: tuple[System, httpx.AsyncClient],
) -> None:
    """A completed order adds one to saga_outcomes_total{completed}, its replies are
    timed by the handler histogram, and /ready says every service is connected."""
    system, http = metered
    outcome = {"saga": "order_fulfilment", "outcome": "completed"}
    replies = system.orchestrator.topology.saga_queues("order_fulfilment")[1].name
    before = await scrape(http)
    await system.inventory.inventory.set_stock("apple", 5)

    saga_id = await system.order(("apple", 2))
    assert (await system.settle(saga_id)).status is Status.COMPLETED

    after = await eventually(
        lambda: scrape(http),
        until=lambda s: (
            value(s, "saga_outcomes_total", **outcome)
            == value(before, "saga_outcomes_total", **outcome) + 1
        ),
        what="the outcome counted",
    )
    handled = "saga_handler_duration_seconds_count"
    assert value(after, handled, queue=replies, outcome="ack") >= 3  # one reply per step
    assert total(after, "saga_handler_duration_seconds_bucket", queue=replies) > 0
    step = {"saga": "order_fulfilment", "step": "reserve_stock", "outcome": "succeeded"}
    assert value(after, "saga_step_duration_seconds_count", **step) >= 1
    assert value(after, "saga_duration_seconds_count", **outcome) >= 1
    assert (await http.get("/health")).status_code == 200
    ready = await http.get("/ready")
    assert ready.status_code == 200, ready.text
    checks = ready.json()
    assert {"orchestrator.broker", "orchestrator.store", "inventory.consuming"} <= set(checks)
    assert set(checks.values()) == {"ok"}


async def test_a_malformed_command_increments_the_malformed_counter(
    metered: tuple[System, httpx.AsyncClient],
) -> None:
    """A command whose body is not JSON is dead-lettered and counted as malformed, by
    the queue it came from."""
    system, http = metered
    queue = system.settings.topology().queue("inventory.commands").name
    before = await scrape(http)
    connection = await aio_pika.connect(system.settings.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(system.settings.topology().commands_exchange)
        message = aio_pika.Message(
            b"not json {", type=ReserveStock.TYPE, correlation_id="s1", message_id="metrics-bad"
        )
        await exchange.publish(message, routing_key="inventory.reserve_stock", mandatory=True)

    malformed = "saga_messages_malformed_total"
    after = await eventually(
        lambda: scrape(http),
        until=lambda s: (
            total(s, malformed, queue=queue) == total(before, malformed, queue=queue) + 1
        ),
        what="the malformed message counted",
    )
    dead = "saga_messages_dead_lettered_total"
    assert total(after, dead, queue=queue) == total(before, dead, queue=queue) + 1


async def test_ready_is_503_until_every_check_passes_and_unknown_paths_are_404() -> None:
    """/ready names the check that fails; /health answers regardless."""
    healthy = {"broker": "ok", "store": "ok", "consuming": "ok"}
    state = {"consuming": "not yet"}

    async def checks() -> dict[str, str]:
        return healthy | state

    server = ProbeServer(host="127.0.0.1", port=free_port())
    server.checks["payment"] = checks
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            waiting = await http.get("/ready")
            assert waiting.status_code == 503
            assert waiting.json()["payment.consuming"] == "not yet"
            assert (await http.get("/health")).json() == {"status": "ok"}
            state.clear()
            assert (await http.get("/ready")).status_code == 200
            assert (await http.get("/nothing")).status_code == 404
            assert (await http.post("/metrics")).status_code == 405
    finally:
        await server.close()


async def test_a_service_process_serves_its_probes_and_logs_only_json(
    settings: Settings, tmp_path: Path
) -> None:
    """``saga-payment`` as the compose file runs it, with SAGA_METRICS_PORT set: /ready
    is 200 once it consumes, /metrics is prometheus text, and every line of its log is
    a JSON object (the ready marker the runners wait for aside)."""
    port = free_port()
    process = ServiceProcess(
        "payment", settings.with_(metrics_port=port, log_format="json"), log_dir=tmp_path
    )
    try:
        await process.started()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            assert (await http.get("/health")).status_code == 200
            ready = await eventually(
                lambda: http.get("/ready"),
                until=lambda r: r.status_code == 200,
                what="payment ready",
            )
            assert set(ready.json()) == {"payment.broker", "payment.store", "payment.consuming"}
            samples = await scrape(http)
        reconnects = "saga_consumer_reconnects_total"
        assert total(samples, reconnects) == 0
        assert any(name == reconnects for name, _ in samples)
    finally:
        process.stop()
    lines = [line for line in process.log.read_text().splitlines() if line.strip()]
    logged = [json.loads(line) for line in lines if line != "payment ready"]
    assert logged, lines
    assert {"service_started", "service_stopped"} <= {line["event"] for line in logged}
    assert all(line["service"] == "payment" for line in logged)


def _connection_pids(name: str) -> list[str]:
    """The broker's pids of the connections called ``name`` (rabbitmqctl, local node)."""
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "pid", "client_properties"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    marker = f'{{"connection_name","{name}"}}'
    return [line.split("\t", 1)[0] for line in listed.stdout.splitlines() if marker in line]


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs a local RabbitMQ node")
async def test_a_connection_closed_by_the_broker_counts_a_reconnect(
    metered: tuple[System, httpx.AsyncClient],
) -> None:
    """The broker closes the payment service's connection (as an operator or a failover
    would): the service reconnects, the counter says so, and /ready is 200 again."""
    system, http = metered
    name = system.payment.bus.name
    reconnects = "saga_consumer_reconnects_total"
    before = value(await scrape(http), reconnects, connection=name)
    pids = await asyncio.to_thread(_connection_pids, name)
    assert len(pids) == 1, pids

    await asyncio.to_thread(
        subprocess.run,
        ["rabbitmqctl", "close_connection", pids[0], "metrics test"],
        check=True,
        capture_output=True,
        timeout=60,
    )

    await eventually(
        lambda: scrape(http),
        until=lambda s: value(s, reconnects, connection=name) == before + 1,
        timeout=60,
        what="the reconnect counted",
    )
    ready = await eventually(
        lambda: http.get("/ready"), until=lambda r: r.status_code == 200, what="ready again"
    )
    assert ready.json()["payment.consuming"] == "ok"
