"""The return pack's harness scenarios (``saga harness list`` shows them with the order
pack's). Each first runs orders to completion through the order saga, then returns them.
"""

from __future__ import annotations

from orchestrator.dev.harness.checks import every_saga, fired
from orchestrator.dev.harness.scenario import Run, Scenario
from orchestrator.faults import FaultRule
from orchestrator.packs.order_return.harness import (
    AMOUNT_CENTS,
    completed_orders,
    request_return,
)
from orchestrator.saga.state import EventType, SagaEvent, Status

__all__ = ["SCENARIOS", "duplicate_returns", "refund_refused", "window_expired"]


def _split(n: int) -> tuple[int, int]:
    """Sagas as (orders, returns): one return per order, at most half of them."""
    returns = n // 2
    return n - returns, returns


async def refund_refused(run: Run) -> None:
    """Payment refuses half of the refunds (a decline rule with a count; what the returns
    service can foresee, more than the order's amount, is refused at acceptance). Past
    the pivot nothing is undone: each refused return is parked as ``completing_stuck``
    with the refusal as its reason, its goods still taken back and no money moved. Once
    the rule has run out (the cause is gone), an operator resumes them, and every return
    completes with exactly one refund."""
    n_orders, n_returns = _split(run.sagas)
    orders = await completed_orders(run, n_orders)
    refused = n_returns // 2
    await run.install(
        FaultRule(
            participant="payment",
            command="refund_payment",
            action="decline",
            count=refused,
            reason="refund refused (injected)",
        )
    )
    returns = [request_return(order, refund_cents=AMOUNT_CENTS) for order in orders[:n_returns]]
    parked = await _parked(run, await run.place(returns))
    findings = [problem for saga_id in parked for problem in await _while_parked(run, saga_id)]
    if len(parked) != refused:
        findings.append(f"{len(parked)} returns parked on their refund, expected {refused}")
    for saga_id in parked:
        await run.deployment.client.resume(saga_id)
    run.expect(completed=n_orders + n_returns)
    run.verify(fired(run, "decline", exactly=refused))

    async def held_while_parked() -> list[str]:
        return findings

    run.verify(held_while_parked)
    run.verify(
        every_saga(run, "only move forward (parked once at most, then resumed)", _forward_only)
    )


def _forward_only(events: list[SagaEvent]) -> bool:
    """Nothing compensated, and a saga parked at most once and resumed from it."""
    kinds = [e.type for e in events]
    parks = kinds.count(EventType.SAGA_PARKED)
    return (
        EventType.COMPENSATION_STARTED not in kinds
        and parks == kinds.count(EventType.SAGA_RESUMED) <= 1
    )


async def _parked(run: Run, ids: list[str]) -> list[str]:
    """Wait until every return completed or parked; the ids of those parked."""
    store = run.deployment.client.store
    found: list[str] = []

    async def settled() -> bool:
        states = [await store.load(saga_id) for saga_id in ids]
        if not all(s.status is not None and s.status.settled for s in states):
            return False
        found[:] = [s.saga_id for s in states if s.status is Status.COMPLETING_STUCK]
        return True

    await run.until(settled, "every return completed or parked", timeout=90)
    return found


async def _while_parked(run: Run, saga_id: str) -> list[str]:
    """What must hold of a return parked on its refund: the refusal is its reason, its
    goods are taken back and no money moved."""
    state = await run.deployment.client.store.load(saga_id)
    db = run.deployment.db
    problems = []
    if state.parked_reason != "refund_payment refused: refund refused (injected)":
        problems.append(f"return {saga_id} parked for {state.parked_reason!r}")
    taken = await db["inventory_returns"].find_one({"_id": saga_id}) or {}
    if taken.get("status") != "taken_back":
        problems.append(f"return {saga_id} parked, its take-back {taken.get('status')}")
    ledger = await db["payment_refunds"].find_one({"_id": state.data.get("order_saga_id")}) or {}
    if saga_id in (ledger.get("refunds") or {}):
        problems.append(f"return {saga_id} parked, yet refunded")
    return problems


async def window_expired(run: Run) -> None:
    """The return window is 0 days: every return is refused at its first step, and
    nothing moves."""
    n_orders, n_returns = _split(run.sagas)
    orders = await completed_orders(run, n_orders)
    await run.place([request_return(o, refund_cents=1) for o in orders[:n_returns]])
    run.expect(completed=n_orders, failed=n_returns)

    async def refused_for_the_window() -> list[str]:
        store = run.deployment.client.store
        wrong = []
        for saga_id in run.saga_ids[n_orders:]:
            state = await store.load(saga_id)
            if state.status is not Status.FAILED or "window" not in (state.reason or ""):
                wrong.append(saga_id)
        return [f"{len(wrong)} returns not refused for the window"] if wrong else []

    run.verify(refused_for_the_window)


async def duplicate_returns(run: Run) -> None:
    """Each order returned by two return sagas at once, each start published twice and
    every reply sent three times: exactly one return per order completes, the other is
    refused as already returned, and each effect happens once."""
    n_orders = max(1, run.sagas // 3)
    orders = await completed_orders(run, n_orders)
    await run.install(FaultRule(participant="*", action="duplicate", copies=3))
    n_returns = run.sagas - n_orders
    returns = [
        request_return(orders[i % n_orders], refund_cents=AMOUNT_CENTS // 2)
        for i in range(n_returns)
    ]
    await run.place(returns, repeat=2)
    run.injected["duplicate_starts"] += n_returns
    winners = min(n_orders, n_returns)
    run.expect(completed=n_orders + winners, failed=n_returns - winners)
    # Replies per return: three steps when it completes, one refused acceptance if not.
    run.verify(fired(run, "duplicate", exactly=3 * winners + (n_returns - winners)))

    def once_each(events: list[SagaEvent]) -> bool:
        keys = [(e.type, e.step, e.attempt) for e in events]
        return len(keys) == len(set(keys))

    run.verify(every_saga(run, "record each event once", once_each))

    async def one_refund_per_order() -> list[str]:
        ledgers = await run.deployment.db["payment_refunds"].find({}).to_list(None)
        counts = sorted(len(d.get("refunds") or {}) for d in ledgers)
        want = [1] * winners
        return [] if counts == want else [f"refunds per order {counts}, expected {want}"]

    run.verify(one_refund_per_order)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        name="return-refund-refused",
        summary="payment refuses half the refunds: parked with the goods back, resumed, "
        "refunded once",
        sagas=20,
        drive=refund_refused,
    ),
    Scenario(
        name="return-window-expired",
        summary="RETURNS_WINDOW_DAYS=0: every return refused at acceptance, nothing moves",
        sagas=20,
        drive=window_expired,
        settings={"extra": {"RETURNS_WINDOW_DAYS": "0"}},
        injects=False,
    ),
    Scenario(
        name="return-duplicate-storm",
        summary="two returns per order, starts twice, replies three times: one return each",
        sagas=24,
        drive=duplicate_returns,
    ),
)
