"""Changing a saga while sagas run: versions side by side, a rolling deploy, and the
start-up check that refuses to drop a version still in use."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from contracts import ScheduleShipment
from orchestrator.client import new_saga_id
from orchestrator.errors import StartupRefused
from orchestrator.faults import FaultRule
from orchestrator.readside import SagaSummaries
from orchestrator.readside.summaries import UNSETTLED as IN_FLIGHT
from orchestrator.runtime.service import OrchestratorService
from orchestrator.saga.state import SagaState, Status
from orchestrator.settings import Settings
from orchestrator.store.connect import connect_mongo
from tests.faults import HeldUntil
from tests.helpers import delete_queues_beyond, eventually, run_cli
from tests.integration.conftest import System, SystemFactory
from tests.integration.test_fault_injection import faults_of
from tests.integration.versioned_order import BOTH, V1_STEPS, V2_REF, V2_STEPS, LoyaltyDesk
from tests.rabbit import depth

pytestmark = pytest.mark.integration


async def start_orchestrator(system: System, settings: Settings, name: str) -> OrchestratorService:
    """Another orchestrator instance (stopped at teardown unless stopped before)."""
    service = OrchestratorService(settings, instance=name)
    await system.start_extra(service)
    return service


async def upgrade(system: System, settings: Settings) -> OrchestratorService:
    """Stop the system's orchestrator and start one with ``settings`` in its place."""
    await system.orchestrator.stop()
    system.orchestrator = OrchestratorService(settings, instance="upgraded")
    await system.orchestrator.start()
    return system.orchestrator


async def settle_all(system: System, saga_ids: list[str]) -> dict[str, SagaState]:
    """Every saga's final state."""
    states = await asyncio.gather(*(system.settle(s, timeout=120) for s in saga_ids))
    return dict(zip(saga_ids, states, strict=True))


async def dead_letters(system: System) -> int:
    """Messages in the orchestrator's start and reply dead-letter queues."""
    starts, replies = system.settings.topology().saga_queues("order_fulfilment")
    url = system.settings.amqp_url
    return await depth(url, starts.dlq) + await depth(url, replies.dlq)


async def test_a_rolling_change_drives_every_saga_by_the_version_it_started_on(
    make_system: SystemFactory,
) -> None:
    """50 sagas run on v1 with shipping slowed by a fault rule. The orchestrator is
    restarted with v1 and v2 (v2 adds a step) while a second instance still on v1 only
    runs beside it: every v1 saga completes with v1's steps, sagas started meanwhile
    complete on whichever version they started, and once the old instance is gone every
    new saga takes v2. Nothing is dead-lettered; the old instance leaves v2 sagas alone."""
    system = await make_system(faults_enabled=True, saga_definitions=BOTH[:1])
    v1, both = system.settings, system.settings.with_(saga_definitions=BOTH)
    await system.inventory.inventory.set_stock("apple", 1_000)
    slow = FaultRule(
        participant="shipping", command="schedule_shipment", action="delay", delay_seconds=1.0
    )
    await faults_of(system).install(slow, listeners=3)
    old = await start_orchestrator(system, v1, "old")  # the instance not yet upgraded
    await system.start_extra(LoyaltyDesk(both))

    first = [await system.order(("apple", 1)) for _ in range(50)]
    await eventually(
        lambda: asyncio.gather(*(system.client.state(s) for s in first)),
        until=lambda states: all(s.started for s in states),
        what="50 sagas started on v1",
    )
    running = await system.client.store.in_flight(["order_fulfilment"])
    assert running.get(("order_fulfilment", 1), 0) > 0, "v1 sagas in flight at the upgrade"
    await upgrade(system, both)
    during = [await system.order(("apple", 1)) for _ in range(10)]
    await settle_all(system, first + during)
    await old.stop()  # the rolling deploy is done
    after = [await system.order(("apple", 1)) for _ in range(10)]
    states = await settle_all(system, first + during + after)

    assert all(s.status is Status.COMPLETED for s in states.values())
    for saga_id in first:
        assert (states[saga_id].saga_version, states[saga_id].done) == (1, V1_STEPS)
    for saga_id in during:
        steps = {1: V1_STEPS, 2: V2_STEPS}[states[saga_id].saga_version]
        assert states[saga_id].done == steps
    for saga_id in after:
        assert (states[saga_id].saga_version, states[saga_id].done) == (2, V2_STEPS)
    assert await dead_letters(system) == 0
    system.settings = both  # the upgraded system registers both versions
    await system.invariants({"apple": 1_000}, list(states))


async def test_a_v2_reply_reaching_a_v1_only_instance_waits_for_one_that_knows_v2(
    make_system: SystemFactory,
) -> None:
    """Only an instance on v1 runs when a v2 saga's reply arrives: it leaves the reply
    (round the first retry tier, its attempt not counted), again and again, and never
    dead-letters it; an instance that knows v2 then finishes the saga. A start naming
    v2 is left for such an instance the same way."""
    system = await make_system(saga_definitions=BOTH)
    v1_only = system.settings.with_(saga_definitions=BOTH[:1])
    await system.inventory.inventory.set_stock("apple", 10)
    await system.start_extra(LoyaltyDesk(system.settings))
    old = await start_orchestrator(system, v1_only, "v1-only")
    release = asyncio.Event()

    async def held(_saga_id: str) -> None:
        await release.wait()

    system.shipping.on_command(ScheduleShipment, HeldUntil(system.shipping.schedule, held))
    try:
        await _deferred_until_served(system, old, release)
    finally:
        release.set()


async def _deferred_until_served(
    system: System, old: OrchestratorService, release: asyncio.Event
) -> None:
    saga_id = await system.client.start(_order(), saga_id=new_saga_id(), version=2)
    await eventually(
        lambda: system.client.state(saga_id),
        until=lambda s: s.step == "schedule_shipment",
        what="v2 saga waiting for shipping",
    )
    assert (await system.client.state(saga_id)).saga_version == 2

    await system.orchestrator.stop()
    release.set()
    await eventually(
        lambda: _value(old.runtime.stats.not_served),
        until=lambda n: n >= 3,
        what="the reply left for another instance several times",
    )
    waiting = await system.client.state(saga_id)
    assert (waiting.status, waiting.step) == (Status.RUNNING, "schedule_shipment")
    assert await dead_letters(system) == 0

    await upgrade(system, system.settings)
    state = await system.settle(saga_id)

    assert (state.status, state.done) == (Status.COMPLETED, V2_STEPS)
    assert await dead_letters(system) == 0


async def test_start_up_refuses_a_configuration_that_drops_a_version_in_flight(
    settings: Settings, make_system: SystemFactory
) -> None:
    """Sagas run on v1 (three held at the shipment, one stored by an earlier release
    before this one was deployed); an orchestrator registering only v2 refuses to start
    and says how many sagas it would strand; once they are all finished, the same
    configuration starts."""
    client = await connect_mongo(settings.require_mongodb_url(), app_name="test.legacy")
    await client[settings.database]["saga_commits"].insert_one(_unmarked_saga("legacy-1"))
    await client.close()
    system = await make_system(saga_definitions=BOTH[:1])
    await system.inventory.inventory.set_stock("apple", 10)
    release = asyncio.Event()

    async def held(_saga_id: str) -> None:
        await release.wait()

    system.shipping.on_command(ScheduleShipment, HeldUntil(system.shipping.schedule, held))
    try:
        await _refused_while_in_flight(system, release)
    finally:
        release.set()  # a held handler would keep the shipping service from stopping


async def _refused_while_in_flight(system: System, release: asyncio.Event) -> None:
    held_ids = [await system.order(("apple", 1)) for _ in range(3)]
    await eventually(
        lambda: asyncio.gather(*(system.client.state(s) for s in held_ids)),
        until=lambda states: all(s.step == "schedule_shipment" for s in states),
        what="three sagas waiting for shipping",
    )
    commits = system.client.store.commits
    drops_v1 = system.settings.with_(saga_definitions=(V2_REF,))

    assert await system.client.store.in_flight(["order_fulfilment"]) == {("order_fulfilment", 1): 4}
    refused = OrchestratorService(drops_v1, instance="v2-only")
    stranded = "order_fulfilment@v1: 4 sagas in flight, but this configuration registers"
    with pytest.raises(StartupRefused, match=rf"{stranded} order_fulfilment v2 only") as caught:
        await refused.start()
    await refused.stop()
    assert "saga sagas --version N --in-flight" in str(caught.value)

    release.set()
    await asyncio.gather(*(system.settle(s) for s in held_ids))
    await commits.insert_one(_unmarked_commit("legacy-1", 2, status="completed"))
    assert await system.client.store.in_flight(["order_fulfilment"]) == {}
    assert await system.client.store.meta.find_one({"_id": "unmarked_sagas_settled"}) is not None

    accepted = OrchestratorService(drops_v1, instance="v2-only-later")
    await system.start_extra(accepted)
    assert accepted.started
    await accepted.stop()
    system.extra.remove(accepted)
    await delete_queues_beyond(drops_v1, system.settings)  # v2's participant queues


def _order() -> Any:
    from contracts import OrderLine, PlaceOrder  # noqa: PLC0415 - local to the helper

    return PlaceOrder(
        order_id="order-v2",
        customer_id="customer-1",
        lines=(OrderLine(sku="apple", quantity=1),),
        amount_cents=1_000,
        ship_to="1 Main Street",
    )


async def _value(n: int) -> int:
    return n


def _unmarked_commit(
    saga_id: str, version: int, *, status: str, events: list[Any] | None = None
) -> dict[str, Any]:
    """A commit as the previous release stored it: no saga_version, no in-flight marks."""
    at = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
    return {
        "_id": f"{saga_id}:{version}",
        "saga_id": saga_id,
        "saga_name": "order_fulfilment",
        "version": version,
        "causation_id": f"{saga_id}:msg-{version}",
        "events": events
        or [{"type": "saga_completed", "at": at, "step": None, "attempt": 1, "data": {}}],
        "outbox": [],
        "dispatched": True,
        "created_at": at,
        "deadline": None,
        "status": status,
        "meta": {},
    }


def _unmarked_saga(saga_id: str) -> dict[str, Any]:
    at = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
    started = {
        "type": "saga_started",
        "at": at,
        "step": None,
        "attempt": 1,
        "data": {"saga_name": "order_fulfilment", "start": {}, "reference": "legacy"},
    }
    waiting = {"type": "step_started", "at": at, "step": "reserve_stock", "attempt": 1, "data": {}}
    return _unmarked_commit(saga_id, 1, status="running", events=[started, waiting])


async def test_saga_lists_filter_by_definition_version_and_in_flight(system: System) -> None:
    """``saga sagas --saga NAME --version N --in-flight`` and ``GET /sagas?version=N``
    read the summaries by saga name, version and unsettled status."""
    summaries = SagaSummaries(database=system.client.store.commits.database)
    now = datetime.now(UTC)
    rows = [
        ("a", "order_fulfilment", 1, "running"),
        ("b", "order_fulfilment", 1, "completed"),
        ("c", "order_fulfilment", 2, "running"),
        ("d", "order_fulfilment", 1, "completing_stuck"),
        ("e", "booking", 1, "running"),
    ]
    for saga_id, name, version, status in rows:
        await summaries.docs.insert_one(
            {"_id": saga_id, "saga_name": name, "saga_version": version, "status": status,
             "updated_at": now, "version": 1}
        )  # fmt: skip

    v1 = await summaries.find(saga_name="order_fulfilment", saga_version=1)
    in_flight = await summaries.find(saga_name="order_fulfilment", saga_version=1, status=IN_FLIGHT)
    code, out, err = await run_cli(
        system.settings, "sagas", "--saga", "order_fulfilment", "--version", "1", "--in-flight"
    )

    assert sorted(d["_id"] for d in v1) == ["a", "b", "d"]
    assert sorted(d["_id"] for d in in_flight) == ["a", "d"]
    assert code == 0, err
    assert "order_fulfilment@v1" in out
    assert "2 sagas listed" in out
