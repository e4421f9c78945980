"""Fault rules that participants obey at run time, installed through the store and the
control exchange; and none of it when fault injection is not enabled."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aio_pika
import pytest
from pydantic import ValidationError

from contracts import AuthorizePayment, OrderLine, ReleaseStock, ReserveStock, RestockStock
from orchestrator.client import new_saga_id
from orchestrator.dev.harness import FaultsClient, FaultsNotApplied
from orchestrator.dev.processes import ServiceProcess
from orchestrator.errors import BrokerUnavailable
from orchestrator.saga.state import EventType, Status
from orchestrator.settings import Settings
from participants.kit.faults import NO_FAULTS, FaultInjector, FaultRule
from participants.shipping import ShippingService
from tests.helpers import eventually
from tests.integration.conftest import System, SystemFactory

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
RESERVE = ReserveStock(order_id="o", lines=(OrderLine(sku="apple", quantity=1),))


def faults_of(system: System) -> FaultsClient:
    """A fault-rule client on the system's broker connection and database."""
    return FaultsClient(bus=system.client.bus, database=system.inventory.db)


async def events_of(system: System, saga_id: str) -> list[tuple[EventType, str | None, int]]:
    """(type, step, attempt) of every event of the saga."""
    return [
        (e.type, e.step, e.attempt) for c in await system.client.history(saga_id) for e in c.events
    ]


# --- the rule model (no I/O) ----------------------------------------------------------


@pytest.mark.parametrize(
    "command", [None, "inventory.reserve_stock.v1", "inventory.reserve_stock", "reserve_stock"]
)
def test_a_rule_names_its_command_in_any_of_three_spellings(command: str | None) -> None:
    """Full type, type without version, or the bare command name all match."""
    rule = FaultRule(participant="inventory", command=command, action="raise")
    assert rule.matches("inventory", RESERVE, "s1", now=NOW)
    assert not rule.matches("payment", RESERVE, "s1", now=NOW)


def test_a_rule_matches_on_participant_saga_and_expiry() -> None:
    """'*' is every participant; a saga id narrows to one saga; an expired rule is off."""
    assert FaultRule(participant="*", action="drop").matches("shipping", RESERVE, "s1", now=NOW)
    by_saga = FaultRule(participant="inventory", saga_id="s1", action="drop")
    assert by_saga.matches("inventory", RESERVE, "s1", now=NOW)
    assert not by_saga.matches("inventory", RESERVE, "s2", now=NOW)
    other = FaultRule(participant="inventory", command="release_stock", action="drop")
    assert not other.matches("inventory", RESERVE, "s1", now=NOW)
    expired = FaultRule(participant="*", action="drop", expires_at=NOW - timedelta(seconds=1))
    assert not expired.matches("inventory", RESERVE, "s1", now=NOW)


def test_decline_only_hits_commands_that_have_a_business_refusal() -> None:
    """Compensations and restocks cannot be refused (their handlers register no refusal
    with the kit), so a decline rule passes them by."""
    rule = FaultRule(participant="*", action="decline")
    assert rule.matches("inventory", RESERVE, "s1", now=NOW, refusable=True)
    release = ReleaseStock(order_id="o")
    assert not rule.matches("inventory", release, "s1", now=NOW, refusable=False)
    restock = RestockStock(sku="apple", units=1)
    assert not rule.matches("inventory", restock, "s1", now=NOW, refusable=False)


def test_rules_are_frozen_and_validated() -> None:
    """A delay needs seconds, a count is positive; unknown fields, actions and command
    names (a typo would never fire) are refused."""
    with pytest.raises(ValidationError, match="delay_seconds"):
        FaultRule(participant="payment", action="delay")
    with pytest.raises(ValidationError):
        FaultRule(participant="payment", action="raise", count=0)
    with pytest.raises(ValidationError):
        FaultRule(participant="payment", action="explode")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        FaultRule(participant="payment", action="raise", colour="red")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="no message type"):
        FaultRule(participant="payment", command="authorise_payment", action="raise")
    rule = FaultRule(participant="payment", action="raise")
    with pytest.raises(ValidationError):
        rule.count = 3  # type: ignore[misc]


# --- off by default -------------------------------------------------------------------


async def test_without_the_setting_nothing_listens_and_rules_have_no_effect(
    make_system: SystemFactory,
) -> None:
    """Off by default: participants hold the no-op hook, nothing is subscribed to the
    control exchange (a mandatory publish comes back), a stored and announced rule is
    confirmed by nobody and fires never; the saga runs as if there were no rule."""
    assert Settings().faults_enabled is False
    assert Settings.from_env({}).faults_enabled is False
    system = await make_system()
    assert [s.faults for s in (system.inventory, system.payment, system.shipping)] == [
        NO_FAULTS
    ] * 3
    await system.inventory.inventory.set_stock("apple", 5)
    faults = faults_of(system)
    decline = FaultRule(participant="payment", action="decline", reason="must not happen")
    with pytest.raises(FaultsNotApplied, match="0 of 1 participant instances"):
        await faults.install(decline, listeners=1, timeout=1.0)
    with pytest.raises(ValueError, match="no participant 'paymnet'"):
        await faults.install(FaultRule(participant="paymnet", action="raise"), listeners=0)
    with pytest.raises(BrokerUnavailable):
        await system.client.bus.publish(
            aio_pika.Message(b"{}"),
            exchange=system.settings.topology().control_exchange,
            routing_key="faults.all",
            mandatory=True,
        )

    saga_id = await system.order(("apple", 1))

    assert (await system.settle(saga_id)).status is Status.COMPLETED
    assert await faults.fired() == Counter()
    await system.invariants({"apple": 5}, [saga_id])


# --- each action ----------------------------------------------------------------------


async def test_decline_is_a_business_refusal_for_the_matching_saga_only(
    make_system: SystemFactory,
) -> None:
    """The handler is not run; the step's refusal is the reply, with the rule's reason;
    every participant instance confirmed the rule before the orders went in."""
    system = await make_system(faults_enabled=True)
    await system.inventory.inventory.set_stock("apple", 5)
    target, other = new_saga_id(), new_saga_id()
    rule = FaultRule(
        participant="payment",
        command="payment.authorize_payment.v1",
        saga_id=target,
        action="decline",
        reason="card reported stolen",
    )
    acks = await faults_of(system).install(rule, listeners=4)
    assert sorted(a.service for a in acks) == ["inventory", "payment", "returns", "shipping"]
    assert [a.rules for a in acks if a.service == "payment"] == [(rule.rule_id,)]

    await system.order(("apple", 1), saga_id=target)
    await system.order(("apple", 1), saga_id=other)

    refused = await system.settle(target)
    assert (refused.status, refused.failed_step) == (Status.COMPENSATED, "authorize_payment")
    assert refused.reason == "card reported stolen"
    assert await system.payment_of(target) is None, "the handler did not run"
    assert (await system.settle(other)).status is Status.COMPLETED
    assert await faults_of(system).fired() == Counter({"decline": 1})
    await system.invariants({"apple": 5}, [target, other])


async def test_raise_is_a_transient_error_retried_while_the_count_lasts(
    make_system: SystemFactory,
) -> None:
    """Two injected errors, then the handler runs: completed on the third attempt."""
    system = await make_system(faults_enabled=True)
    await system.inventory.inventory.set_stock("apple", 5)
    rule = FaultRule(participant="inventory", command="reserve_stock", action="raise", count=2)
    await faults_of(system).install(rule, listeners=4)

    saga_id = await system.order(("apple", 1))

    assert (await system.settle(saga_id)).status is Status.COMPLETED
    assert (EventType.STEP_SUCCEEDED, "reserve_stock", 3) in await events_of(system, saga_id)
    assert await faults_of(system).fired() == Counter({"raise": 2})


async def test_delay_holds_the_reply_after_the_effect_is_stored(
    make_system: SystemFactory,
) -> None:
    """The shipment is booked at once; the saga hears of it the rule's seconds later."""
    system = await make_system(faults_enabled=True)
    await system.inventory.inventory.set_stock("apple", 5)
    rule = FaultRule(
        participant="shipping", command="schedule_shipment", action="delay", delay_seconds=1.0
    )
    await faults_of(system).install(rule, listeners=4)

    saga_id = await system.order(("apple", 1))
    await eventually(lambda: system.shipment_of(saga_id), what="shipment booked")
    waiting = await system.client.state(saga_id)
    assert (waiting.status, waiting.step) == (Status.RUNNING, "schedule_shipment")

    assert (await system.settle(saga_id)).status is Status.COMPLETED
    events = [e for c in await system.client.history(saga_id) for e in c.events]
    asked = next(
        e.at for e in events if e.type is EventType.STEP_STARTED and e.step == "schedule_shipment"
    )
    heard = next(
        e.at for e in events if e.type is EventType.STEP_SUCCEEDED and e.step == "schedule_shipment"
    )
    assert heard - asked >= timedelta(seconds=1.0)


async def test_drop_loses_the_reply_and_the_resend_recovers(make_system: SystemFactory) -> None:
    """The first reply is dropped (and the command acked): the step's deadline resends the
    command, payment repeats its stored outcome, the saga completes."""
    system = await make_system(
        faults_enabled=True, step_timeout=0.5, step_max_sends=3, deadline_poll=0.1
    )
    await system.inventory.inventory.set_stock("apple", 5)
    rule = FaultRule(participant="payment", command="authorize_payment", action="drop", count=1)
    await faults_of(system).install(rule, listeners=4)

    saga_id = await system.order(("apple", 1))

    assert (await system.settle(saga_id)).status is Status.COMPLETED
    assert (EventType.COMMAND_RESENT, "authorize_payment", 2) in await events_of(system, saga_id)
    assert await faults_of(system).fired() == Counter({"drop": 1})
    await system.invariants({"apple": 5}, [saga_id])


async def test_duplicate_sends_the_reply_n_times_and_the_saga_takes_it_once(
    make_system: SystemFactory,
) -> None:
    """Three copies of StockReserved reach the orchestrator; one moves the saga on."""
    system = await make_system(faults_enabled=True)
    await system.inventory.inventory.set_stock("apple", 5)
    rule = FaultRule(participant="inventory", command="reserve_stock", action="duplicate", copies=3)
    await faults_of(system).install(rule, listeners=4)
    sent = system.inventory.replies_sent

    saga_id = await system.order(("apple", 1))

    assert (await system.settle(saga_id)).status is Status.COMPLETED
    # three copies of StockReserved, and the reply to ship_stock (order saga v2)
    # (counted once each confirm is back, which may be after the saga stored its end)
    await eventually(
        lambda: asyncio.sleep(0, system.inventory.replies_sent - sent),
        until=lambda n: n == 3 + 1,
        what="four replies sent",
    )
    stats = system.orchestrator.runtime.stats
    await eventually(lambda: asyncio.sleep(0, stats.duplicates), until=lambda n: n >= 2)
    reserved = [
        e
        for e in await events_of(system, saga_id)
        if e[:2] == (EventType.STEP_SUCCEEDED, "reserve_stock")
    ]
    assert len(reserved) == 1


async def test_crash_exits_the_process_before_the_ack_and_the_restart_completes_it(
    make_system: SystemFactory, tmp_path: Path
) -> None:
    """A payment process crashes with the rule's exit code right after storing the
    authorization (no reply, no ack); the restarted process gets the command again, finds
    the authorization and replies; the count keeps it from crashing again."""
    system = await make_system(faults_enabled=True)
    await system.inventory.inventory.set_stock("apple", 5)
    await system.payment.stop()  # a payment process takes its place
    settings = system.settings.with_(log_format="json")
    first = ServiceProcess("payment", settings, log_dir=tmp_path, instance="first")
    second = ServiceProcess("payment", settings, log_dir=tmp_path, instance="second")
    payments = system.inventory.db["payment_authorizations"]
    try:
        await first.started()
        saga_id = new_saga_id()
        rule = FaultRule(
            participant="payment",
            command="authorize_payment",
            saga_id=saga_id,
            action="crash",
            count=1,
            exit_code=71,
        )
        await faults_of(system).install(rule, listeners=4)

        await system.order(("apple", 1), saga_id=saga_id)

        await eventually(lambda: asyncio.sleep(0, first.alive), until=lambda alive: not alive)
        assert first.process is not None
        assert first.process.returncode == 71
        stored = await payments.find_one({"_id": saga_id})
        assert stored is not None
        assert stored["status"] == "authorized", "the effect was stored before the crash"
        state = await system.client.state(saga_id)
        assert (state.status, state.step) == (Status.RUNNING, "authorize_payment")

        await second.started()
        assert (await system.settle(saga_id)).status is Status.COMPLETED
        assert await faults_of(system).fired() == Counter({"crash": 1})
        await system.invariants({"apple": 5}, [saga_id])
    finally:
        first.stop()
        second.stop()


# --- at run time, and across restarts -------------------------------------------------


async def test_rules_change_at_run_time_and_a_new_instance_loads_them_at_start(
    make_system: SystemFactory,
) -> None:
    """A rule installed while the system runs is obeyed; a participant instance started
    later loads it from the store; once cleared, it no longer fires."""
    system = await make_system(faults_enabled=True)
    await system.inventory.inventory.set_stock("apple", 5)
    faults = faults_of(system)
    rule = FaultRule(participant="shipping", command="schedule_shipment", action="decline")
    await faults.install(rule, listeners=4)
    refused = await system.order(("apple", 1))
    assert (await system.settle(refused)).status is Status.COMPENSATED

    late_starter = ShippingService(system.settings, instance="late")
    await system.start_extra(late_starter)
    assert isinstance(late_starter.faults, FaultInjector)
    assert [r.rule_id for r in late_starter.faults.rules] == [rule.rule_id]

    acks = await faults.clear(listeners=5)
    assert all(a.rules == () for a in acks)
    completed = await system.order(("apple", 1))

    assert (await system.settle(completed)).status is Status.COMPLETED
    assert await faults.fired() == Counter({"decline": 1})
    await system.invariants({"apple": 5}, [refused, completed])


async def test_a_count_is_shared_by_every_instance(make_system: SystemFactory) -> None:
    """Two payment instances consume one budget of two declines between them."""
    system = await make_system(faults_enabled=True)
    await system.start_extra(type(system.payment)(system.settings, instance="b"))
    await system.inventory.inventory.set_stock("apple", 10)
    rule = FaultRule(
        participant="payment", command=AuthorizePayment.TYPE, action="decline", count=2
    )
    await faults_of(system).install(rule, listeners=5)

    sagas = [await system.order(("apple", 1)) for _ in range(6)]

    outcomes = Counter([(await system.settle(s)).status for s in sagas])
    assert outcomes == Counter({Status.COMPENSATED: 2, Status.COMPLETED: 4})
    assert await faults_of(system).fired() == Counter({"decline": 2})
