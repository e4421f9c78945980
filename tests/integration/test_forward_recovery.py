"""Order fulfilment v2 over the real broker and store: capturing the payment and shipping
the stock are retriable steps after the pivot, so ``completed`` means both are done, even
when the payment service keeps failing for a while or the store freezes under load."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.dev.embedded import EmbeddedMongo
from orchestrator.dev.harness import FaultsClient
from orchestrator.saga.state import EventType, SagaState, Status
from participants.kit.faults import FaultRule
from tests.integration.conftest import System, SystemFactory
from tests.rabbit import depth

pytestmark = pytest.mark.integration

FIVE = ("reserve_stock", "authorize_payment", "schedule_shipment", "capture_payment", "ship_stock")
FREEZE_SECONDS = 45.0
LOAD = 60


async def settle_all(system: System, saga_ids: list[str], timeout: float) -> dict[str, SagaState]:
    """Every saga's final (or parked) state."""
    states = await asyncio.gather(*(system.settle(s, timeout=timeout) for s in saga_ids))
    return dict(zip(saga_ids, states, strict=True))


async def dead_letters(system: System) -> dict[str, int]:
    """Messages parked in the dead-letter queue of every work queue, by queue (non-empty)."""
    url = system.settings.amqp_url
    found = {q.dlq: await depth(url, q.dlq) for q in system.settings.topology().work_queues}
    return {name: n for name, n in found.items() if n}


async def test_a_capture_failing_five_times_is_driven_forward_to_one_capture(
    make_system: SystemFactory,
) -> None:
    """The payment service fails the capture five times in a row (a fault rule): its own
    retries run out on the first send, so the orchestrator's resend of the retriable step
    carries on, and the saga ends completed with exactly one capture; nothing before the
    pivot is undone."""
    system = await make_system(faults_enabled=True, step_timeout=3.0)
    await system.inventory.inventory.set_stock("apple", 10)
    rule = FaultRule(participant="payment", command="capture_payment", action="raise", count=5)
    await FaultsClient(bus=system.client.bus, database=system.inventory.db).install(
        rule, listeners=4
    )

    saga_id = await system.order(("apple", 2), amount_cents=2_500)
    state = await system.settle(saga_id, timeout=120)

    assert (state.status, state.saga_version, state.done) == (Status.COMPLETED, 2, FIVE)
    payments = system.payment.payments.authorizations
    records = [doc async for doc in payments.find({"_id": saga_id})]
    assert len(records) == 1
    assert (records[0]["status"], records[0]["capture_id"]) == ("captured", f"cap-{saga_id}")
    assert records[0]["amount_cents"] == 2_500
    history = await system.client.history(saga_id)
    kinds = [(e.type, e.step) for c in history for e in c.events]
    assert (EventType.COMMAND_RESENT, "capture_payment") in kinds
    assert not any(kind is EventType.COMPENSATION_STARTED for kind, _ in kinds)
    assert kinds.count((EventType.STEP_SUCCEEDED, "capture_payment")) == 1
    apple = await system.levels("apple")
    assert (apple.available, apple.reserved, apple.shipped) == (8, 0, 2)
    await system.invariants({"apple": 10}, [saga_id])


@pytest.fixture
def own_store(tmp_path: Path) -> Iterator[EmbeddedMongo]:
    """A store of this test's own (an nx-27017 process it may freeze without stopping
    the session's store that other tests share)."""
    server = EmbeddedMongo(tmp_path / "frozen-store")
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            os.kill(server.process.pid, signal.SIGCONT)  # never leave it frozen
        server.stop()


@pytest.mark.timeout(420)
async def test_the_store_frozen_for_45_s_under_load_loses_and_dead_letters_nothing(
    own_store: EmbeddedMongo, make_system: SystemFactory
) -> None:
    """60 orders run while the store process is stopped (SIGSTOP) for 45 s, then resumed:
    every saga completes, every payment is captured, every unit shipped, and nothing is
    dead-lettered on any work queue. Settings are the defaults of the test system (no
    extra retry tiers): an operator should not have to size them for a store outage."""
    system = await make_system(mongodb_url=own_store.url)
    await system.inventory.inventory.set_stock("apple", 1_000)
    assert own_store.process is not None
    pid = own_store.process.pid

    saga_ids = [await system.order(("apple", 1)) for _ in range(LOAD // 2)]
    os.kill(pid, signal.SIGSTOP)
    try:
        # the rest of the load arrives while the store is frozen
        saga_ids += [await system.order(("apple", 1)) for _ in range(LOAD - LOAD // 2)]
        await asyncio.sleep(FREEZE_SECONDS)  # the outage itself, not a wait for an effect
    finally:
        os.kill(pid, signal.SIGCONT)
    states = await settle_all(system, saga_ids, timeout=300)

    assert {s.status for s in states.values()} == {Status.COMPLETED}
    assert all(s.done == FIVE for s in states.values())
    payments = system.payment.payments.authorizations
    docs = [await payments.find_one({"_id": saga_id}) for saga_id in saga_ids]
    assert [d["status"] if d else None for d in docs] == ["captured"] * LOAD
    apple = await system.levels("apple")
    assert (apple.available, apple.reserved, apple.shipped) == (1_000 - LOAD, 0, LOAD)
    assert await dead_letters(system) == {}
    await system.invariants({"apple": 1_000}, saga_ids)
