"""Group commit in the running orchestrator: a batch that fails in the store fails every
message in it (none is acked early), and a SIGKILL with a half-filled batch loses
nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from orchestrator.client import SagaClient, new_saga_id
from orchestrator.dev.processes import ServiceProcess
from orchestrator.errors import StoreUnavailable
from orchestrator.ports import SagaStore
from orchestrator.saga.commits import Commit
from orchestrator.saga.state import SagaState, Status
from orchestrator.settings import Settings
from participants.inventory import InventoryService
from tests.helpers import eventually
from tests.integration.conftest import System

pytestmark = pytest.mark.integration


class LostAfterWriting:
    """The first batch of at least ``size`` commits is written, then the connection is
    'lost': the batcher sees StoreUnavailable although the documents are stored."""

    def __init__(self, inner: SagaStore, size: int) -> None:
        self.inner = inner
        self.size = size
        self.failed: list[Commit] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # the rest of the store is passed through

    async def load(self, saga_id: str) -> SagaState:
        return await self.inner.load(saga_id)

    async def append(self, commit: Commit) -> None:
        await self.inner.append(commit)

    async def append_many(self, commits: Sequence[Commit]) -> list[Exception | None]:
        outcomes = await self.inner.append_many(commits)
        if not self.failed and len(commits) >= self.size:
            self.failed = list(commits)
            raise StoreUnavailable("injected: connection lost after the write")
        return outcomes


async def test_a_batch_the_store_fails_fails_every_message_in_it(system: System) -> None:
    """Every message of the failed batch comes back (it was not acked), finds its commit
    already stored (a duplicate), and the relay publishes what the handlers could not:
    every saga completes, each commit exactly once."""
    await system.inventory.inventory.set_stock("apple", 20)
    batcher = system.orchestrator.batcher
    batcher.window = 0.05  # gather the concurrent starts into one batch
    faulty = LostAfterWriting(batcher.store, size=3)
    batcher.store = faulty
    sagas = await asyncio.gather(*(system.order(("apple", 1)) for _ in range(10)))

    for saga_id in sagas:
        assert (await system.settle(saga_id)).status is Status.COMPLETED
    assert len(faulty.failed) >= 3
    stats = system.orchestrator.runtime.stats
    assert stats.duplicates >= len(faulty.failed), "each message of the batch came back"
    for saga_id in sagas:
        versions = [c.version for c in await system.client.history(saga_id)]
        assert versions == list(range(1, len(versions) + 1))
    assert batcher.batches < batcher.appended, "commits shared inserts"
    await system.invariants({"apple": 20}, sagas)


async def test_sigkill_with_a_half_filled_batch_loses_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    """The orchestrator runs as a process with a 200 ms group-commit window, so a batch
    is always filling; it is SIGKILLed with sagas in flight and restarted: every saga
    completes and stock is conserved."""
    slow = settings.with_(log_format="json", extra={"SAGA_COMMIT_WINDOW_MS": "200"})
    procs = {
        name: ServiceProcess(name, slow, log_dir=tmp_path, instance="a")
        for name in ("orchestrator", "inventory", "payment", "shipping")
    }
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
        commits = client.store.commits
        # Mid-flight for sure: a saga's third commit is stored (it completes at its sixth,
        # each at least one 200 ms window later). The sagas move in step, one batch per
        # window, so waiting for a first completion could see them all complete at once.
        await eventually(
            lambda: commits.count_documents({"saga_id": {"$in": sagas}, "version": {"$gte": 3}}),
            until=lambda n: n >= 1,
            interval=0.01,
            what="a saga's third commit stored",
        )
        procs["orchestrator"].kill()
        states = [await client.state(s) for s in sagas]
        unsettled = sum(1 for s in states if not (s.status and s.status.settled))
        print(f"\nSIGKILLed the orchestrator with {unsettled} of 60 sagas unsettled")
        assert unsettled > 0
        restarted = ServiceProcess("orchestrator", slow, log_dir=tmp_path, instance="b")
        await restarted.started()
        for saga_id in sagas:
            state = await client.wait_settled(saga_id, timeout=90)
            assert state.status is Status.COMPLETED, saga_id
    finally:
        for proc in (*procs.values(), *([restarted] if restarted else [])):
            proc.stop()
        await client.close()
        if view.started:
            await view.stop()


async def view_order(client: SagaClient, saga_id: str) -> None:
    """Place a one-apple order through the broker."""
    from contracts import OrderLine, PlaceOrder  # noqa: PLC0415 - local to this helper

    await client.start(
        PlaceOrder(
            order_id=f"order-{saga_id[:8]}",
            customer_id="customer-1",
            lines=(OrderLine(sku="apple", quantity=1),),
            amount_cents=1_000,
            ship_to="1 Main Street, Springfield",
        ),
        saga_id=saga_id,
    )
