"""The order-return pack without I/O: its definition, its registration beside the order
saga, and the returns service's policy over an order saga's stored commits."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from pathlib import Path

from contracts import (
    AcceptReturn,
    OrderLine,
    PaymentRefunded,
    RefundPayment,
    RefundRefused,
    RequestReturn,
    ReturnAccepted,
    SagaCompleted,
    StockTakenBack,
)
from orchestrator.packs import load_packs, registry_of, routes_of
from orchestrator.packs.order_return import ORDER_RETURN, ORDER_RETURN_V2, PACK
from orchestrator.packs.order_return.definition import REFUND_RETRY, order_return_v2
from orchestrator.saga.commits import Commit
from orchestrator.saga.definition import Retry
from orchestrator.saga.registry import SagaRegistry
from orchestrator.saga.state import EventType, SagaEvent, Status
from orchestrator.settings import DEFAULT_PACKS
from participants.returns import ReturnPolicy
from tests.unit.saga_run import SagaRun, event_types, sent

ROOT = Path(__file__).resolve().parents[2]
COMPLETED_AT = datetime(2030, 1, 1, tzinfo=UTC)
E = EventType
THREE = ("accept_return", "take_back_stock", "refund_payment")
RID = "rma-1"


def test_v1_of_the_return_saga_has_three_compensable_steps_ending_with_the_refund() -> None:
    assert [s.name for s in ORDER_RETURN.steps] == [
        "accept_return",
        "take_back_stock",
        "refund_payment",
    ]
    assert [s.participant for s in ORDER_RETURN.steps] == ["returns", "inventory", "payment"]
    assert all(s.compensate is not None for s in ORDER_RETURN.steps)
    assert ORDER_RETURN.start.TYPE == "order_returns.request_return.v1"
    assert (ORDER_RETURN.version, ORDER_RETURN.pivot) == (1, None)


def test_v2_takes_the_goods_back_as_its_pivot_then_drives_the_refund_forward() -> None:
    assert tuple(s.name for s in ORDER_RETURN_V2.steps) == THREE
    assert (ORDER_RETURN_V2.version, ORDER_RETURN_V2.pivot) == (2, "take_back_stock")
    refund = ORDER_RETURN_V2.step("refund_payment")
    assert refund.retriable
    assert refund.retry == REFUND_RETRY
    assert refund.compensate is None, "past the pivot nothing is undone"
    assert refund.failure is RefundRefused, "a refusal parks the saga, named as such"
    assert all(s.compensate is not None for s in ORDER_RETURN_V2.steps[:2])


def test_new_returns_take_v2_and_v1_stays_registered_for_returns_in_flight() -> None:
    registry = SagaRegistry(PACK.definitions)

    assert registry.versions("order_return") == (1, 2)
    assert registry.get("order_return") is ORDER_RETURN_V2
    assert registry.for_start(RequestReturn) is ORDER_RETURN_V2
    assert registry.get("order_return", 1) is ORDER_RETURN


def request() -> RequestReturn:
    return RequestReturn(
        return_id=RID,
        order_saga_id="order-1",
        lines=(OrderLine(sku="apple", quantity=1),),
        refund_cents=500,
    )


def refund_sent(retry: Retry = REFUND_RETRY) -> SagaRun:
    """A v2 return past its pivot: accepted, the goods taken back, the refund sent."""
    run = SagaRun(definition=order_return_v2(timeout=10, max_sends=2, retry=retry))
    run.receive(request(), message_id="start-1")
    run.receive(ReturnAccepted(return_id=RID))
    run.receive(StockTakenBack(return_id=RID))
    return run


def test_v2_completes_only_once_the_refund_is_done() -> None:
    run = refund_sent()
    assert run.state.status is Status.RUNNING
    assert isinstance(run.decisions[-1].outbox[0].message, RefundPayment)

    done = run.receive(PaymentRefunded(return_id=RID, refund_id="refund-1"))

    assert event_types(done) == [E.STEP_SUCCEEDED, E.SAGA_COMPLETED]
    assert (run.state.status, run.state.done) == (Status.COMPLETED, THREE)
    assert done.outbox[0].message == SagaCompleted(
        saga_name="order_return", reference=RID, saga_version=2, steps=THREE
    )


def test_a_refused_refund_parks_v2_with_the_reason_and_undoes_nothing() -> None:
    run = refund_sent()

    refused = run.receive(RefundRefused(return_id=RID, reason="1500 cents asked, 1000 left"))

    assert event_types(refused) == [E.SAGA_PARKED]
    assert refused.outbox == ()
    assert run.state.status is Status.COMPLETING_STUCK
    assert run.state.parked_reason == "refund_payment refused: 1500 cents asked, 1000 left"
    assert run.state.done == THREE[:2]


def test_a_parked_refund_is_resumed_in_a_new_round_and_then_completes() -> None:
    run = refund_sent()
    run.receive(RefundRefused(return_id=RID, reason="refused"))
    assert run.state.deadline is None

    resumed = run.resume(COMPLETED_AT + timedelta(days=2))

    assert sent(resumed) == [
        (
            "command",
            "payment.refund_payment.v1",
            "saga-42:refund_payment:do:r1",
            "payment.refund_payment",
        )
    ]
    run.receive(PaymentRefunded(return_id=RID, refund_id="refund-1"))
    assert (run.state.status, run.state.done) == (Status.COMPLETED, THREE)
    undone = [e for d in run.decisions for e in event_types(d) if e is E.COMPENSATION_STARTED]
    assert undone == []


def test_a_refund_without_reply_is_resent_until_its_budget_then_parked() -> None:
    run = refund_sent(Retry(max_sends=3, backoff=2.0, max_interval=60.0))

    parked = run.give_up()

    resends = [d for d in run.decisions if E.COMMAND_RESENT in event_types(d)]
    assert len(resends) == 2
    assert event_types(parked) == [E.SAGA_PARKED]
    assert run.state.status is Status.COMPLETING_STUCK
    assert run.state.parked_reason == "no reply to refund_payment after 3 sends"


def test_both_shipped_packs_register_together_order_first() -> None:
    """One registry, one topology: the returns queue beside the order saga's."""
    packs = load_packs(DEFAULT_PACKS)
    assert [p.name for p in packs] == ["order_fulfilment", "order_return"]
    # the order pack also ships its parallel variant
    assert registry_of(packs).names == (
        "order_fulfilment",
        "order_fulfilment_parallel",
        "order_return",
    )
    routes = routes_of(packs)
    assert "returns" in routes.participants
    assert {s.name: s.starts for s in routes.sagas}["order_return"] == (
        "order_returns.request_return",
    )
    assert PACK.services["returns"] == "participants.returns"


def test_the_pack_imports_nothing_of_the_order_pack() -> None:
    """Its code needs the order saga's contracts only, never the order pack's modules."""
    code = [
        *(ROOT / "orchestrator" / "packs" / "order_return").glob("*.py"),
        *(ROOT / "participants" / "returns").glob("*.py"),
        ROOT / "participants" / "inventory" / "returns.py",
        ROOT / "participants" / "payment" / "refunds.py",
    ]
    for path in code:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any("order_fulfilment" in n for n in names), f"{path} imports {names}"


def order(
    *, name: str = "order_fulfilment", completed: bool = True, amount_cents: int | None = None
) -> list[Commit]:
    """An order saga's commits: started with two apples, completed (or not)."""
    start: dict[str, object] = {"order_id": "o-1", "lines": [{"sku": "apple", "quantity": 2}]}
    if amount_cents is not None:
        start |= {"amount_cents": amount_cents, "currency": "EUR"}
    events = [
        SagaEvent(
            type=EventType.SAGA_STARTED,
            at=COMPLETED_AT - timedelta(minutes=1),
            data={"saga_name": name, "start": start},
        ),
        SagaEvent(type=EventType.STEP_STARTED, at=COMPLETED_AT, step="reserve_stock"),
    ]
    if completed:
        events.append(SagaEvent(type=EventType.SAGA_COMPLETED, at=COMPLETED_AT))
    return [
        Commit(
            saga_id="order-1",
            version=1,
            causation_id="start",
            events=tuple(events),
            created_at=COMPLETED_AT,
        )
    ]


def accept(*lines: tuple[str, int]) -> AcceptReturn:
    return AcceptReturn(
        return_id="r-1",
        order_saga_id="order-1",
        lines=tuple(OrderLine(sku=s, quantity=q) for s, q in lines or (("apple", 1),)),
    )


def test_policy_accepts_ordered_lines_of_a_completed_order_within_the_window() -> None:
    policy = ReturnPolicy(window=timedelta(days=14))
    inside = COMPLETED_AT + timedelta(days=14)

    assert policy.refusal(order(), accept(("apple", 2)), now=inside) == ""


def test_policy_refuses_with_the_reason() -> None:
    policy = ReturnPolicy(window=timedelta(days=14))
    now = COMPLETED_AT + timedelta(days=1)
    late = COMPLETED_AT + timedelta(days=14, seconds=1)

    refusals = {
        "no saga order-1 is known": policy.refusal([], accept(), now=now),
        "running, not completed": policy.refusal(order(completed=False), accept(), now=now),
        "a travel saga, not an order": policy.refusal(order(name="travel"), accept(), now=now),
        "window closed at 2030-01-15 00:00:00 UTC": policy.refusal(order(), accept(), now=late),
        "3 x apple returned, 2 on the order": policy.refusal(
            order(), accept(("apple", 3)), now=now
        ),
        "1 x pear returned, 0 on the order": policy.refusal(order(), accept(("pear", 1)), now=now),
    }

    for words, reason in refusals.items():
        assert words in reason, (words, reason)


def test_a_window_of_zero_days_closes_at_completion() -> None:
    policy = ReturnPolicy(window=timedelta(0))
    assert policy.refusal(order(), accept(), now=COMPLETED_AT) == ""
    assert "window closed" in policy.refusal(
        order(), accept(), now=COMPLETED_AT + timedelta(microseconds=1)
    )


def test_policy_refuses_a_refund_payment_would_refuse_before_any_goods_move() -> None:
    """More than the order's amount, or another currency: refused at acceptance (payment
    would refuse it after the goods are back on sale, and a take-back of goods sold in
    the meantime cannot be undone). No amount asked, or none on the order: not checked."""
    policy = ReturnPolicy()
    now = COMPLETED_AT + timedelta(days=1)
    paid = order(amount_cents=3_000)

    def asking(cents: int | None, currency: str | None = None) -> AcceptReturn:
        return accept().model_copy(update={"refund_cents": cents, "currency": currency})

    assert policy.refusal(paid, asking(3_000, "EUR"), now=now) == ""
    assert policy.refusal(paid, asking(None), now=now) == ""
    assert policy.refusal(order(), asking(10**9), now=now) == ""
    assert "3001 cents was asked, the order was 3000" in policy.refusal(
        paid, asking(3_001), now=now
    )
    assert "paid in EUR, a refund in USD" in policy.refusal(paid, asking(1, "USD"), now=now)
