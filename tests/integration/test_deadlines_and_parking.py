"""Step deadlines, late replies, parked compensations and several instances at once."""

from __future__ import annotations

import asyncio

import pytest

from contracts import ReleaseStock, ScheduleShipment, StockReserved
from orchestrator.messaging.envelope import build_message
from orchestrator.runtime.service import OrchestratorService
from orchestrator.saga.state import EventType, Status
from participants.inventory import InventoryService
from participants.payment import PaymentService
from participants.shipping import ShippingService
from tests.faults import Broken, HeldUntil
from tests.helpers import eventually
from tests.integration.conftest import System, SystemFactory
from tests.rabbit import take_all

pytestmark = pytest.mark.integration


async def test_slow_participant_is_resent_then_compensated_and_its_late_reply_too(
    make_system: SystemFactory,
) -> None:
    """Shipping answers only after the saga gave up on it: the command is resent, the step
    times out and the saga compensates; the late ShipmentScheduled is compensated too."""
    system = await make_system(step_timeout=1.0, step_max_sends=2)
    await system.inventory.inventory.set_stock("apple", 5)

    async def until_timed_out(saga_id: str) -> None:
        async def events() -> list[EventType]:
            return [e.type for c in await system.client.history(saga_id) for e in c.events]

        await eventually(
            events,
            until=lambda kinds: EventType.STEP_TIMED_OUT in kinds,
            what="shipping step timed out",
        )

    slow = HeldUntil(system.shipping.schedule, until_timed_out)
    system.shipping.on_command(ScheduleShipment, slow)

    saga_id = await system.order(("apple", 2))
    await system.invariants({"apple": 5}, [saga_id])

    history = await system.client.history(saga_id)
    kinds = [(e.type, e.step) for c in history for e in c.events]
    assert (EventType.COMMAND_RESENT, "schedule_shipment") in kinds
    assert (EventType.STEP_TIMED_OUT, "schedule_shipment") in kinds
    assert (EventType.LATE_SUCCESS_COMPENSATING, "schedule_shipment") in kinds
    resends = [
        o for c in history for o in c.outbox if o.routing_key == "shipping.schedule_shipment"
    ]
    assert len({o.message_id for o in resends}) == 1, "a resend reuses the message id"
    assert len(resends) == 2
    state = await system.client.state(saga_id)
    assert state.status is Status.COMPENSATED
    shipment = await system.shipment_of(saga_id)
    assert shipment is not None
    assert shipment["status"] == "cancelled"
    payment = await system.payment_of(saga_id)
    assert payment is not None
    assert payment["status"] == "voided"


async def test_failing_compensation_parks_the_saga_until_resumed(
    make_system: SystemFactory,
) -> None:
    """ReleaseStock keeps failing: it is retried with backoff, the saga is parked with the
    reason and step; once the fault is cleared, resuming it finishes the compensation."""
    system = await make_system(retry_delays=(0.1, 0.2), step_timeout=1.5, step_max_sends=2)
    await system.inventory.inventory.set_stock("apple", 5)
    broken = Broken(system.inventory.release)
    system.inventory.on_command(ReleaseStock, broken)
    limit = system.payment.payments.decline_above_cents

    saga_id = await system.order(("apple", 2), amount_cents=limit + 1)
    parked = await system.settle(saga_id)

    assert parked.status is Status.COMPENSATION_FAILED
    assert parked.step == "reserve_stock"
    assert "no reply to reserve_stock" in (parked.parked_reason or "")
    assert parked.reason is not None
    assert "above the limit" in parked.reason, "the original failure is kept"

    async def calls() -> int:
        return broken.calls

    # the park follows the second send's deadline; its last retry may still be due
    await eventually(calls, until=lambda n: n == 6, what="two sends, three attempts each")
    held = await system.levels("apple")
    assert (held.available, held.reserved) == (3, 2), "stock stays held while parked"

    broken.fixed = True
    resumed = await system.orchestrator.runtime.resume(saga_id)
    assert resumed is not None
    state = await system.settle(saga_id)

    assert state.status is Status.COMPENSATED
    await system.invariants({"apple": 5}, [saga_id])
    assert await system.orchestrator.runtime.resume(saga_id) is None, "only parked sagas resume"


async def test_two_instances_of_everything_under_200_concurrent_sagas(system: System) -> None:
    """Two orchestrators and two of each participant share the queues: the invariants hold
    and optimistic-concurrency conflicts are retried, never lost."""
    settings = system.settings
    second = [
        OrchestratorService(settings, instance="b"),
        InventoryService(settings, instance="b"),
        PaymentService(settings, instance="b"),
        ShippingService(settings, instance="b"),
    ]
    for service in second:
        await system.start_extra(service)
    stock = {"apple": 150, "pear": 60}
    for sku, units in stock.items():
        await system.inventory.inventory.set_stock(sku, units)

    orders = []
    for i in range(200):
        lines = [("apple", 1)] if i % 2 else [("apple", 1), ("pear", 1)]
        ship_to = "Atlantis" if i % 10 == 0 else "1 Main Street"
        orders.append(system.order(*lines, ship_to=ship_to))
    sagas = await asyncio.gather(*orders)

    report = await system.invariants(stock, sagas, timeout=180)

    orchestrators = [system.orchestrator, second[0]]
    conflicts = sum(o.runtime.stats.conflicts for o in orchestrators)
    reloads = sum(o.runtime.stats.stale_reloads for o in orchestrators)
    commits = [o.runtime.stats.commits for o in orchestrators]
    print(
        f"\n200 sagas on two orchestrators: {report}; commits per instance {commits}; "
        f"version conflicts retried: {conflicts}; stale cached states reloaded: {reloads}"
    )
    assert all(c > 0 for c in commits), "both orchestrators did work"
    assert sum(report.outcomes.values()) == 200
    assert set(report.outcomes) == {"completed", "failed", "compensated"}
    completed_pears = 60 - (await system.levels("pear")).available
    assert completed_pears <= 60


async def test_a_deadline_survives_an_orchestrator_restart(make_system: SystemFactory) -> None:
    """The deadline is stored, not a timer: an orchestrator that crashed after sending the
    command is replaced, and the new instance times the step out and compensates."""
    system = await make_system(step_timeout=1.5, step_max_sends=1)
    await system.inventory.inventory.set_stock("apple", 5)
    sent = asyncio.Event()

    async def no_reply(saga_id: str, command: ScheduleShipment) -> None:
        await system.shipping.schedule(saga_id, command)  # booked, but the reply is lost
        sent.set()

    system.shipping.on_command(ScheduleShipment, no_reply)
    saga_id = await system.order(("apple", 2))
    await asyncio.wait_for(sent.wait(), timeout=30)
    restarted = await system.restart_orchestrator(crash=True)

    state = await system.settle(saga_id)

    assert state.status is Status.COMPENSATED
    assert state.failed_step == "schedule_shipment"
    assert restarted.runtime.stats.timeouts >= 1, "the new instance fired the deadline"
    shipment = await system.shipment_of(saga_id)
    assert shipment is not None
    assert shipment["status"] == "cancelled", "the step that may have happened is undone"
    await system.invariants({"apple": 5}, [saga_id])


async def test_replies_for_unknown_and_finished_sagas_are_counted_not_fatal(
    system: System,
) -> None:
    """A reply for a saga that never existed is dead-lettered with its reason; one for a
    finished saga is counted and acked; the orchestrator keeps serving."""
    await system.inventory.inventory.set_stock("apple", 5)
    finished = await system.order(("apple", 1))
    await system.settle(finished)
    topology = system.settings.topology()
    for saga_id in ("never-started", finished):
        stray = build_message(
            StockReserved(order_id="x"), message_id=f"{saga_id}:stray", correlation_id=saga_id
        )
        await system.client.bus.publish(
            stray,
            exchange=topology.replies_exchange,
            routing_key=topology.reply_key("order_fulfilment"),
        )
    stats = system.orchestrator.runtime.stats
    await eventually(
        lambda: asyncio.sleep(0, dict(stats.ignored_by_reason)),
        until=lambda r: r.get("unknown_saga") == 1 and r.get("unexpected_reply") == 1,
        what="stray replies counted",
    )
    dlq = topology.queue("orchestrator.order_fulfilment.replies").dlq
    dead = await eventually(
        lambda: take_all(system.settings.amqp_url, dlq),
        until=bool,
        what="unknown saga's reply dead-lettered",
    )
    assert [(m.correlation_id, m.headers["x-error-reason"]) for m in dead] == [
        ("never-started", "unknown_saga")
    ]
    again = await system.order(("apple", 1))
    assert (await system.settle(again)).status is Status.COMPLETED
