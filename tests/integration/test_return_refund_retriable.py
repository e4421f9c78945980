"""Order return v2 over the real broker and store: the take-back is the pivot and the
refund is retriable, so a return is ``completed`` only once its money is refunded, a
refund that keeps failing is driven forward, and a refused one parks the return for an
operator instead of undoing the take-back."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.dev.harness import FaultsClient
from orchestrator.faults import FaultRule
from orchestrator.readside import ReadSideService
from orchestrator.saga.state import EventType, SagaState, Status
from tests.helpers import eventually, run_cli
from tests.integration.conftest import System, SystemFactory
from tests.integration.test_return_saga import goodwill_refund, sent_commands

pytestmark = pytest.mark.integration

E = EventType
THREE = ("accept_return", "take_back_stock", "refund_payment")
STOCK = {"apple": 10}


async def events_of(system: System, saga_id: str) -> list[tuple[EventType, str | None]]:
    return [(e.type, e.step) for c in await system.client.history(saga_id) for e in c.events]


async def refunds_of(system: System, order: str) -> dict[str, int]:
    """The refunds recorded against an order, by return saga."""
    ledger = await system.payment.refunds.ledger(order)
    return dict((ledger or {}).get("refunds") or {})


async def assert_parked_with_the_goods_back(
    system: System, saga_id: str, state: SagaState, reason: str
) -> None:
    """Parked on the refund with ``reason``: the take-back stays, nothing was undone."""
    assert (state.status, state.saga_version) == (Status.COMPLETING_STUCK, 2)
    assert state.parked_steps == ("refund_payment",)
    assert state.parked_reason == f"refund_payment refused: {reason}"
    assert state.done == THREE[:2]
    assert await system.inventory.returns.taken_back(saga_id) == {"apple": 2}
    assert not any(kind is E.COMPENSATION_STARTED for kind, _ in await events_of(system, saga_id))


async def test_a_refund_refused_after_the_pivot_parks_the_return_until_resumed(
    system: System,
) -> None:
    """Asking more than is still refundable (an earlier goodwill refund): payment
    refuses, and past the pivot nothing is undone: the return is parked as
    completing_stuck with the refusal as its reason, its goods stay back on sale, no
    money moved, and no undo command was sent. Once customer service cancels the
    goodwill refund (the cause), a resume refunds the return, once."""
    await system.inventory.inventory.set_stock("apple", 10)
    order = await system.completed_order(("apple", 3), amount_cents=3_000)
    await goodwill_refund(system, order, captured=3_000, refunded=2_000)

    greedy = await system.return_order(order, ("apple", 2), refund_cents=1_500)
    state = await system.settle(greedy)

    reason = "1500 cents asked, 1000 of the captured payment refundable"
    await assert_parked_with_the_goods_back(system, greedy, state, reason)
    assert await sent_commands(system, greedy) == [
        "returns.accept_return",
        "inventory.take_back_stock",
        "payment.refund_payment",
    ]
    apple = await system.levels("apple")
    assert (apple.available, apple.reserved, apple.shipped) == (9, 0, 1)
    assert await refunds_of(system, order) == {"goodwill": 2_000}
    await system.invariants(STOCK, [order, greedy])

    await system.payment.refunds.cancel("goodwill", order)
    assert await system.client.resume(greedy) is not None
    done = await system.settle(greedy)

    assert (done.status, done.done) == (Status.COMPLETED, THREE)
    assert await refunds_of(system, order) == {greedy: 1_500}
    await system.invariants(STOCK, [order, greedy])


async def test_a_refused_refund_resumed_once_its_cause_is_gone_refunds_once(
    make_system: SystemFactory,
) -> None:
    """Payment refuses one refund (a decline rule with count 1). The operator sees the
    return in ``saga status`` and ``saga stuck`` with the refusal; once the rule has run
    out, ``saga resume`` sends the refund in a new round and the return completes with
    exactly one refund, the goods never having left stock again."""
    system = await make_system(faults_enabled=True)
    readside = ReadSideService(system.settings)
    await system.start_extra(readside)
    await system.inventory.inventory.set_stock("apple", 10)
    order = await system.completed_order(("apple", 3), amount_cents=3_000)
    rule = FaultRule(
        participant="payment",
        command="refund_payment",
        action="decline",
        count=1,
        reason="card issuer offline (injected)",
    )
    await FaultsClient(bus=system.client.bus, database=system.inventory.db).install(
        rule, listeners=4
    )

    saga_id = await system.return_order(order, ("apple", 2), refund_cents=2_000)
    parked = await system.settle(saga_id)

    await assert_parked_with_the_goods_back(
        system, saga_id, parked, "card issuer offline (injected)"
    )
    assert await refunds_of(system, order) == {}
    await system.invariants(STOCK, [order, saga_id])
    s = system.settings
    code, status, _ = await run_cli(s, "status", saga_id)
    assert code == 0
    assert "completing_stuck" in status
    assert "refund_payment refused: card issuer offline (injected)" in status
    await eventually(
        lambda: readside.summaries.get(saga_id),
        until=lambda doc: doc is not None and doc["status"] == "completing_stuck",
        what="the summary of the parked return",
    )
    code, stuck, _ = await run_cli(s, "stuck", "--threshold", "0s")
    assert code == 1
    assert saga_id in stuck
    assert "card issuer offline" in stuck

    code, _, err = await run_cli(s, "resume", saga_id)
    assert code == 0, err
    state = await system.settle(saga_id)

    assert (state.status, state.done) == (Status.COMPLETED, THREE)
    assert await refunds_of(system, order) == {saga_id: 2_000}
    kinds = await events_of(system, saga_id)
    assert kinds.count((E.SAGA_PARKED, "refund_payment")) == 1
    assert (E.SAGA_RESUMED, "refund_payment") in kinds
    assert kinds.count((E.STEP_SUCCEEDED, "refund_payment")) == 1
    assert not any(kind is E.COMPENSATION_STARTED for kind, _ in kinds)
    apple = await system.levels("apple")
    assert (apple.available, apple.shipped) == (9, 1)
    await system.invariants(STOCK, [order, saga_id])


async def test_a_refund_failing_five_times_is_driven_forward_to_one_refund(
    make_system: SystemFactory,
) -> None:
    """Payment's refund fails five times in a row (a transient error, injected by a
    fault rule): its own retries
    run out on the first send, so the orchestrator's resend of the retriable step
    carries on, and the return ends completed with exactly one refund; nothing before
    the pivot is undone."""
    system = await make_system(faults_enabled=True, step_timeout=3.0)
    await system.inventory.inventory.set_stock("apple", 10)
    order = await system.completed_order(("apple", 3), amount_cents=3_000)
    rule = FaultRule(participant="payment", command="refund_payment", action="raise", count=5)
    faults = FaultsClient(bus=system.client.bus, database=system.inventory.db)
    await faults.install(rule, listeners=4)

    saga_id = await system.return_order(order, ("apple", 2), refund_cents=2_000)
    state = await system.settle(saga_id, timeout=120)

    assert (state.status, state.saga_version, state.done) == (Status.COMPLETED, 2, THREE)
    assert (await faults.fired())["raise"] == 5
    assert await refunds_of(system, order) == {saga_id: 2_000}
    kinds = await events_of(system, saga_id)
    assert (E.COMMAND_RESENT, "refund_payment") in kinds
    assert kinds.count((E.STEP_SUCCEEDED, "refund_payment")) == 1
    assert not any(kind is E.COMPENSATION_STARTED for kind, _ in kinds)
    await system.invariants(STOCK, [order, saga_id])


async def test_a_refund_whose_reply_is_lost_is_resent_and_refunded_once(
    make_system: SystemFactory,
) -> None:
    """The refund happened but its first reply never came: v2 does not undo it, it
    resends the command (same message id), payment repeats the reply of the refund it
    recorded, and the return completes with one refund, nothing reversed."""
    system = await make_system(step_timeout=1.0, deadline_poll=0.1)
    original = system.payment.send_reply
    dropped: list[str] = []

    async def drop_the_first_refund_reply(envelope: Any, reply: Any, **kwargs: Any) -> None:
        if reply.TYPE == "payment.payment_refunded.v1" and not dropped:
            dropped.append(envelope.message_id)
            return
        await original(envelope, reply, **kwargs)

    system.payment.send_reply = drop_the_first_refund_reply  # type: ignore[method-assign]
    await system.inventory.inventory.set_stock("apple", 10)
    order = await system.completed_order(("apple", 3), amount_cents=3_000)

    saga_id = await system.return_order(order, ("apple", 1), refund_cents=1_000)
    state = await system.settle(saga_id)

    assert (state.status, state.done) == (Status.COMPLETED, THREE)
    assert dropped == [f"{saga_id}:refund_payment:do"]
    assert "payment.cancel_refund" not in await sent_commands(system, saga_id)
    ledger = await system.payment.refunds.ledger(order)
    assert ledger is not None
    assert (ledger["refunds"], ledger["reversed"]) == ({saga_id: 1_000}, {})
    assert (E.COMMAND_RESENT, "refund_payment") in await events_of(system, saga_id)
    await system.invariants(STOCK, [order, saga_id])
