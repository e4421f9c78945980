"""Scenarios of refusals, transient errors, time and bad input: faults the participants
inject at run time (rules, see ``participants.kit.faults``) or the harness publishes."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from contracts import AuthorizePayment, Message, PaymentAuthorized, ReserveStock
from orchestrator.client import new_saga_id
from orchestrator.dev.harness.checks import count_sagas, every_saga, fired, has, histories
from orchestrator.dev.harness.scenario import Run
from orchestrator.faults import FaultRule
from orchestrator.packs.order_fulfilment.harness import mixed, order, stock_up
from orchestrator.packs.order_fulfilment.inventory_view import inventory_levels
from orchestrator.saga.state import EventType, SagaEvent, Status

__all__ = [
    "duplicate_storm",
    "happy_path",
    "insufficient_stock",
    "late_reply",
    "payment_declined",
    "poison_message",
    "reply_lost",
    "retries_exhausted",
    "shipping_fails",
    "slow_participant",
]


async def happy_path(run: Run) -> None:
    """Plenty of stock, no faults, every saga at once."""
    await stock_up(run, apple=2 * run.sagas, pear=run.sagas)
    orders = [order(("apple", 2), *((("pear", 1),) if i % 2 else ())) for i in range(run.sagas)]
    await run.place(orders)
    run.expect(completed=run.sagas)


async def payment_declined(run: Run) -> None:
    """Payment declines half of the authorizations (a rule with a count)."""
    declines = run.sagas // 2
    await stock_up(run, apple=run.sagas)
    await run.install(
        FaultRule(
            participant="payment",
            command="authorize_payment",
            action="decline",
            count=declines,
            reason="card declined (injected)",
        )
    )
    await run.place([order(("apple", 1)) for _ in range(run.sagas)])
    run.expect(completed=run.sagas - declines, compensated=declines)
    run.verify(fired(run, "decline", exactly=declines))


async def shipping_fails(run: Run) -> None:
    """Shipping refuses every fourth saga (rules by saga id): payment voided, stock
    released, in that order."""
    ids = [new_saga_id() for _ in range(run.sagas)]
    targets = set(ids[::4])
    await stock_up(run, apple=run.sagas)
    await run.install(
        *(
            FaultRule(
                participant="shipping",
                command="schedule_shipment",
                saga_id=saga_id,
                action="decline",
                reason="no carrier available (injected)",
            )
            for saga_id in targets
        )
    )
    await run.place([order(("apple", 1)) for _ in ids], saga_ids=ids)
    run.expect(completed=len(ids) - len(targets), compensated=len(targets))
    run.verify(fired(run, "decline", exactly=len(targets)))

    async def only_targets_compensated() -> list[str]:
        store = run.deployment.client.store
        wrong = [
            s for s in ids if ((await store.load(s)).status is Status.COMPENSATED) != (s in targets)
        ]
        return [f"{len(wrong)} sagas compensated or not against their rule"] if wrong else []

    run.verify(only_targets_compensated)
    run.verify(
        every_saga(
            run,
            "undo payment before stock",
            lambda ev: (
                not any(e.type is EventType.STEP_FAILED for e in ev)
                or [e.step for e in ev if e.type is EventType.STEP_COMPENSATED]
                == ["authorize_payment", "reserve_stock"]
            ),
        )
    )


async def insufficient_stock(run: Run) -> None:
    """Four times more orders than units, all at once: exactly the stock is sold."""
    units = max(1, run.sagas // 4)
    await stock_up(run, gpu=units)
    await run.place([order(("gpu", 1)) for _ in range(run.sagas)])
    run.expect(completed=units, failed=run.sagas - units)

    async def sold_out() -> list[str]:
        levels = await inventory_levels(run.deployment.db, "gpu")
        got = (levels.available, levels.reserved, levels.shipped)
        return [] if got == (0, 0, units) else [f"gpu stock {got}, expected (0, 0, {units})"]

    run.verify(sold_out)


async def retries_exhausted(run: Run) -> None:
    """Payment raises on every authorization: each is retried, dead-lettered after the
    last attempt, and the saga times the step out and compensates."""
    await stock_up(run, apple=run.sagas)
    await run.install(
        FaultRule(
            participant="payment",
            command="authorize_payment",
            action="raise",
            reason="payment gateway unavailable (injected)",
        )
    )
    await run.place([order(("apple", 1)) for _ in range(run.sagas)])
    attempts = run.deployment.topology.queue("payment.commands").max_attempts
    run.expect(compensated=run.sagas)
    run.expect_dead_letters("payment.commands", retries_exhausted=run.sagas)
    run.verify(fired(run, "raise", exactly=attempts * run.sagas))


async def slow_participant(run: Run) -> None:
    """Shipping answers 1.5 s late against a 1 s deadline: the command is resent, the
    first reply completes the step and the second is ignored as a duplicate."""
    await stock_up(run, apple=run.sagas)
    await run.install(
        FaultRule(
            participant="shipping",
            command="schedule_shipment",
            action="delay",
            delay_seconds=1.5,
        )
    )
    await run.place([order(("apple", 1)) for _ in range(run.sagas)])
    run.expect(completed=run.sagas)
    run.verify(fired(run, "delay", least=run.sagas))
    run.verify(
        every_saga(
            run, "resend the slow command", has(EventType.COMMAND_RESENT, "schedule_shipment")
        )
    )


async def late_reply(run: Run) -> None:
    """Shipping answers after the step gave up (3.5 s against 2 sends of 1 s): the saga
    compensates, and the late ShipmentScheduled is itself compensated."""
    await stock_up(run, apple=run.sagas)
    await run.install(
        FaultRule(
            participant="shipping",
            command="schedule_shipment",
            action="delay",
            delay_seconds=3.5,
        )
    )
    await run.place([order(("apple", 1)) for _ in range(run.sagas)])
    run.expect(compensated=run.sagas)
    late = has(EventType.LATE_SUCCESS_COMPENSATING, "schedule_shipment")
    run.wait_for(count_sagas(run, late, "late replies compensated"))
    run.verify(every_saga(run, "compensate the late reply", late))
    run.verify(
        every_saga(run, "time the step out", has(EventType.STEP_TIMED_OUT, "schedule_shipment"))
    )

    async def shipments_cancelled() -> list[str]:
        docs = await run.deployment.db["shipping_shipments"].find({}).to_list(None)
        states = Counter(d["status"] for d in docs)
        want = {"cancelled": run.sagas}
        return [] if states == want else [f"shipments {dict(states)}, expected {want}"]

    run.verify(shipments_cancelled)


async def reply_lost(run: Run) -> None:
    """Payment's replies are dropped for half of the sagas: the orchestrator resends,
    payment repeats its stored outcome, every saga completes."""
    drops = run.sagas // 2
    await stock_up(run, apple=run.sagas)
    await run.install(
        FaultRule(participant="payment", command="authorize_payment", action="drop", count=drops)
    )
    await run.place([order(("apple", 1)) for _ in range(run.sagas)])
    run.expect(completed=run.sagas)
    run.verify(fired(run, "drop", exactly=drops))

    async def resent() -> list[str]:
        resend = has(EventType.COMMAND_RESENT, "authorize_payment")
        n = sum(resend(events) for events in (await histories(run)).values())
        return [] if n >= drops else [f"{n} authorizations resent, expected {drops}"]

    run.verify(resent)


async def duplicate_storm(run: Run) -> None:
    """Every start command published twice and every participant reply sent three times:
    each effect happens once, each saga's history has no event twice."""
    ids = [new_saga_id() for _ in range(run.sagas)]
    orders, refused = mixed(run.sagas)
    await stock_up(run, apple=run.sagas, pear=run.sagas)
    await run.install(FaultRule(participant="*", action="duplicate", copies=3))
    await run.place(orders, saga_ids=ids, repeat=2)
    run.injected["duplicate_starts"] += run.sagas
    completed = run.sagas - refused
    run.expect(completed=completed, compensated=refused)
    # Replies per saga: 5 when it completes (five steps); reserve, authorize, refused shipment, void
    # and release when shipping refuses. No step times out, so nothing is resent.
    run.verify(fired(run, "duplicate", exactly=5 * completed + 5 * refused))

    def once_each(events: list[SagaEvent]) -> bool:
        keys = [(e.type, e.step, e.attempt) for e in events]
        return len(keys) == len(set(keys))

    run.verify(every_saga(run, "record each event once", once_each))


POISON: dict[str, tuple[type[Message], dict[str, Any]]] = {
    "inventory.commands": (
        ReserveStock,
        {"order_id": "poison", "lines": [{"sku": "apple", "quantity": 1}]},
    ),
    "payment.commands": (
        AuthorizePayment,
        {"order_id": "poison", "customer_id": "c", "amount_cents": 1},
    ),
    "orchestrator.order_fulfilment.replies": (
        PaymentAuthorized,
        {"order_id": "poison", "authorization_id": "auth-poison"},
    ),
}
"""Queue -> a message type it takes and a valid body of it."""


async def poison_message(run: Run) -> None:
    """Malformed messages of every kind land beside good sagas in two participants' and
    the orchestrator's queues: each goes straight to its dead-letter queue with its
    reason, nothing else is disturbed."""
    await stock_up(run, apple=run.sagas)
    await run.place([order(("apple", 1)) for _ in range(run.sagas)])
    limit = run.deployment.settings.max_body_bytes
    for queue, (kind, valid) in POISON.items():
        kinds: dict[str, tuple[bytes, str | None, str | None]] = {
            "undecodable": (b"{not json", kind.TYPE, "poison"),
            "unknown_type": (b"{}", kind.TYPE.replace(".v1", "_teleport.v1"), "poison"),
            "schema_violation": (json.dumps({"unexpected": 1}).encode(), kind.TYPE, "poison"),
            "missing_correlation_id": (json.dumps(valid).encode(), kind.TYPE, None),
            "too_large": (b"x" * (limit + 1), kind.TYPE, "poison"),
        }
        for body, type_name, correlation_id in kinds.values():
            await run.deployment.publish_raw(
                queue, body, type_name=type_name, correlation_id=correlation_id
            )
        run.expect_dead_letters(queue, **dict.fromkeys(kinds, 1))
        run.injected["poison_messages"] += len(kinds)
    run.expect(completed=run.sagas)
