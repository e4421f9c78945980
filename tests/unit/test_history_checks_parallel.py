"""The generic history invariants on the parallel order saga: a group's compensations
run in any order among themselves, but before the steps of earlier stages, and a step
still pending when the group failed is undone once it answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from contracts import (
    Message,
    OrderLine,
    PaymentAuthorized,
    PaymentDeclined,
    PaymentVoided,
    ShipmentFailed,
    StockReleased,
    StockReserved,
)
from orchestrator.dev.harness.history_checks import compensation_order, steps_answered
from orchestrator.packs.order_fulfilment.definition import (
    PlaceOrderInParallel,
    order_fulfilment_parallel,
)
from orchestrator.saga.commits import Commit, OutboxEntry
from orchestrator.saga.decide import Decision, Incoming, decide, decide_timeout
from orchestrator.saga.state import SagaState, Status, apply_commit

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
SAGA = order_fulfilment_parallel(timeout=10, max_sends=1)
OID = "o-1"


class History:
    """The parallel order saga driven through ``decide``, committed as the runtime does."""

    def __init__(self) -> None:
        self.state = SagaState(saga_id="saga-p")
        self.commits: list[Commit] = []
        self.now = NOW

    def feed(self, message: Message) -> History:
        incoming = Incoming(message=message, message_id=f"m{len(self.commits)}-{message.TYPE}")
        return self._commit(decide(SAGA, self.state, incoming, now=self.now), incoming.message_id)

    def time_out(self) -> History:
        self.now += timedelta(seconds=11)
        return self._commit(decide_timeout(SAGA, self.state, now=self.now), "deadline")

    def _commit(self, decision: Decision, causation: str) -> History:
        assert decision.ignored is None, decision.ignored
        version = self.state.version + 1
        self.commits.append(
            Commit(
                saga_id=self.state.saga_id,
                saga_name=SAGA.name,
                version=version,
                causation_id=f"{causation}:{version}",
                events=decision.events,
                outbox=tuple(OutboxEntry.of(o) for o in decision.outbox),
                created_at=self.now,
            )
        )
        self.state = apply_commit(self.state, version, causation, decision.events)
        return self

    def problems(self) -> list[str]:
        return compensation_order(SAGA, self.commits) + steps_answered(self.state, self.commits)


def started() -> History:
    return History().feed(
        PlaceOrderInParallel(
            order_id=OID,
            customer_id="c",
            lines=(OrderLine(sku="apple", quantity=1),),
            amount_cents=100,
        )
    )


def test_both_steps_of_the_group_run_and_the_saga_completes_without_problems() -> None:
    history = started()
    assert history.state.step == "reserve_stock+authorize_payment"

    history.feed(StockReserved(order_id=OID)).feed(
        PaymentAuthorized(order_id=OID, authorization_id="a")
    )

    assert history.state.step == "schedule_shipment"
    assert history.problems() == []


def test_a_refusal_undoes_the_other_step_once_it_answers_late() -> None:
    history = started().feed(PaymentDeclined(order_id=OID, reason="no"))
    assert history.state.status is Status.COMPENSATING
    assert history.problems() == [], "still waiting on the reservation, with a deadline"

    history.feed(StockReserved(order_id=OID)).feed(StockReleased(order_id=OID))

    assert history.state.status is Status.COMPENSATED
    assert history.problems() == []


def test_a_shipment_refusal_undoes_both_steps_of_the_group_in_either_order() -> None:
    history = (
        started()
        .feed(PaymentAuthorized(order_id=OID, authorization_id="a"))
        .feed(StockReserved(order_id=OID))
        .feed(ShipmentFailed(order_id=OID, reason="nowhere"))
    )
    assert {a.step for a in history.state.awaiting} == {"reserve_stock", "authorize_payment"}

    history.feed(StockReleased(order_id=OID)).feed(PaymentVoided(order_id=OID))

    assert history.state.status is Status.COMPENSATED
    assert history.problems() == []


def test_a_group_step_that_times_out_after_the_refusal_is_undone_too() -> None:
    history = started().feed(PaymentDeclined(order_id=OID, reason="no")).time_out()
    assert history.state.pending("reserve_stock") is not None
    assert history.state.pending("reserve_stock").undo  # type: ignore[union-attr]

    history.feed(StockReleased(order_id=OID))

    assert history.state.status is Status.COMPENSATED
    assert history.problems() == []


def test_undoing_a_step_that_never_ran_is_found() -> None:
    history = started().feed(PaymentDeclined(order_id=OID, reason="no"))
    history.feed(StockReserved(order_id=OID)).feed(StockReleased(order_id=OID))
    # a bogus extra compensation of the shipment, which never started
    bogus = history.commits[-1]
    history.commits[-1] = Commit(
        saga_id=bogus.saga_id,
        saga_name=bogus.saga_name,
        version=bogus.version,
        causation_id=bogus.causation_id,
        events=bogus.events,
        outbox=(
            *bogus.outbox,
            OutboxEntry(
                kind="command",
                type="shipping.cancel_shipment.v1",
                body={"order_id": OID},
                message_id="saga-p:schedule_shipment:undo",
                routing_key="shipping.cancel_shipment",
            ),
        ),
        created_at=bogus.created_at,
    )

    assert compensation_order(SAGA, history.commits) == [
        "saga saga-p: compensation commands sent ['reserve_stock', 'schedule_shipment'], "
        "expected in the order ['reserve_stock']"
    ]
