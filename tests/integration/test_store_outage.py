"""A store outage is not the messages' fault: frozen for 60 s under load, nothing is
dead-lettered, every saga finishes and the invariants hold.

The test runs its own embedded server and freezes it (SIGSTOP, then SIGCONT), which is
closer to an election or a partition than a clean stop: sockets stay open and nothing
answers, so only the MongoDB operation timeouts get the handlers out.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from orchestrator.dev.embedded import EmbeddedMongo
from orchestrator.saga.state import Status
from orchestrator.settings import Settings
from tests.helpers import eventually
from tests.integration.conftest import System, start_system, stop_system
from tests.rabbit import depth

pytestmark = pytest.mark.integration

FROZEN_FOR = 60.0
ORDERS_BEFORE = ORDERS_DURING = 15


@pytest.fixture
async def own_store(tmp_path: Path) -> AsyncIterator[EmbeddedMongo]:
    """An embedded server of this test alone (freezing it stops nobody else)."""
    server = EmbeddedMongo(tmp_path / "nx")
    server.start()
    try:
        yield server
    finally:
        thaw(server)
        server.stop()


def thaw(server: EmbeddedMongo) -> None:
    if server.process is not None and server.process.poll() is None:
        os.killpg(server.process.pid, signal.SIGCONT)


@contextmanager
def frozen(server: EmbeddedMongo) -> Iterator[None]:
    """The server's process group stopped (SIGSTOP) until the block ends."""
    assert server.process is not None
    os.killpg(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        thaw(server)


@pytest.fixture
async def system(settings: Settings, own_store: EmbeddedMongo) -> AsyncIterator[System]:
    """The whole system on the test's own store, with short MongoDB timeouts."""
    running = await start_system(
        settings.with_(
            mongodb_url=own_store.url,
            mongodb_timeout_ms=3_000,
            mongodb_server_selection_timeout_ms=1_000,
            mongodb_connect_timeout_ms=1_000,
        )
    )
    try:
        yield running
    finally:
        await stop_system(running)


async def test_a_store_frozen_for_a_minute_under_load_dead_letters_nothing(
    system: System, own_store: EmbeddedMongo
) -> None:
    """With retry delays of 0.2, 0.5 and 1 s every message in flight would be
    dead-lettered within 2 s of the freeze if an outage counted attempts. Instead the
    consumers hold their messages until the store answers: every saga completes, all
    dead-letter queues stay empty, and stock is conserved."""
    stock = {"apple": 100, "pear": 100}
    for sku, units in stock.items():
        await system.inventory.inventory.set_stock(sku, units)
    saga_ids = [await system.order(("apple", 1), ("pear", 1)) for _ in range(ORDERS_BEFORE)]
    gates = [
        s.store_gate
        for s in (system.orchestrator, system.inventory, system.payment, system.shipping)
        if hasattr(s, "store_gate")
    ]
    loop = asyncio.get_running_loop()
    with frozen(own_store):
        started = loop.time()
        saga_ids += [await system.order(("apple", 1), ("pear", 1)) for _ in range(ORDERS_DURING)]
        await eventually(
            lambda: asyncio.sleep(0, sum(g.held for g in gates)),
            until=lambda held: held > 0,
            timeout=30,
            what="messages held while the store is frozen",
        )
        # The outage itself: its length is the point of the test, not a wait for an effect.
        await asyncio.sleep(max(FROZEN_FOR - (loop.time() - started), 0))

    for saga_id in saga_ids:
        assert (await system.settle(saga_id, timeout=90)).status is Status.COMPLETED, saga_id
    assert all(g.outages >= 1 for g in gates if g is system.orchestrator.store_gate)

    report = await system.invariants(stock, saga_ids)
    assert report.ok, report
    amqp = system.settings.amqp_url
    dead = {q.dlq: await depth(amqp, q.dlq) for q in system.settings.topology().work_queues}
    assert not any(dead.values()), f"dead-lettered during the outage: {dead}"
    levels = await system.levels("apple")
    assert (levels.available, levels.reserved) == (100 - len(saga_ids), 0)
