"""Drive the order saga through ``decide`` / ``decide_timeout`` and ``apply_commit``.

No I/O and no clock: every decision gets an explicit ``now``. A decision is applied the
way the runtime does it: as commit ``version + 1`` whose causation id is the incoming
message id; ignored decisions are not committed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from contracts import (
    Message,
    OrderLine,
    PaymentAuthorized,
    PaymentDeclined,
    PaymentVoided,
    PlaceOrder,
    ShipmentCancelled,
    ShipmentFailed,
    ShipmentScheduled,
    StockReleased,
    StockReservationFailed,
    StockReserved,
)
from orchestrator.packs.order_fulfilment.definition import order_fulfilment
from orchestrator.saga.decide import Decision, Incoming, decide, decide_resume, decide_timeout
from orchestrator.saga.definition import SagaDefinition
from orchestrator.saga.state import EventType, SagaEvent, SagaState, apply_commit

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
TIMEOUT = 10
MAX_SENDS = 2
SAGA = order_fulfilment(timeout=TIMEOUT, max_sends=MAX_SENDS)
SAGA_ID = "saga-42"
ORDER_ID = "order-42"
START_ID = "start-1"

Commit = tuple[int, str | None, tuple[SagaEvent, ...]]


def seconds(n: float) -> timedelta:
    """A duration, for readable deadlines."""
    return timedelta(seconds=n)


def place_order(**changes: Any) -> PlaceOrder:
    """The order every test starts with: two lines, five units."""
    fields: dict[str, Any] = {
        "order_id": ORDER_ID,
        "customer_id": "cust-7",
        "lines": (OrderLine(sku="SKU-1", quantity=2), OrderLine(sku="SKU-2", quantity=3)),
        "amount_cents": 4200,
        "currency": "EUR",
        "ship_to": "1 Main Street",
    }
    return PlaceOrder(**{**fields, **changes})


# Replies, as the participants send them.
def stock_reserved() -> StockReserved:
    return StockReserved(order_id=ORDER_ID)


def stock_reservation_failed() -> StockReservationFailed:
    return StockReservationFailed(order_id=ORDER_ID, reason="out of stock", sku="SKU-2")


def stock_released() -> StockReleased:
    return StockReleased(order_id=ORDER_ID)


def payment_authorized() -> PaymentAuthorized:
    return PaymentAuthorized(order_id=ORDER_ID, authorization_id="auth-1")


def payment_declined() -> PaymentDeclined:
    return PaymentDeclined(order_id=ORDER_ID, reason="card declined")


def payment_voided() -> PaymentVoided:
    return PaymentVoided(order_id=ORDER_ID)


def shipment_scheduled() -> ShipmentScheduled:
    return ShipmentScheduled(order_id=ORDER_ID, shipment_id="ship-1")


def shipment_failed() -> ShipmentFailed:
    return ShipmentFailed(order_id=ORDER_ID, reason="address unreachable")


def shipment_cancelled() -> ShipmentCancelled:
    return ShipmentCancelled(order_id=ORDER_ID)


def commit(state: SagaState, decision: Decision, causation_id: str | None) -> SagaState:
    """Apply a decision as the next commit; an ignored or empty decision changes nothing."""
    if decision.ignored or not decision.events:
        return state
    return apply_commit(state, state.version + 1, causation_id, decision.events)


def event_types(decision: Decision) -> list[EventType]:
    """The types of the events a decision stores, in order."""
    return [event.type for event in decision.events]


def sent(decision: Decision) -> list[tuple[str, str, str, str]]:
    """What a decision sends: (kind, wire type, message id, routing key), in order."""
    return [(o.kind, o.message.TYPE, o.message_id, o.routing_key) for o in decision.outbox]


@dataclass
class SagaRun:
    """One saga, driven message by message; keeps its commits so they can be replayed."""

    definition: SagaDefinition = SAGA
    state: SagaState = field(default_factory=lambda: SagaState(saga_id=SAGA_ID))
    commits: list[Commit] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def receive(
        self,
        message: Message,
        *,
        message_id: str | None = None,
        attempts: int = 1,
        now: datetime = NOW,
    ) -> Decision:
        """Decide on one message and commit the decision with the message id as causation."""
        message_id = message_id or f"msg-{next(self._ids)}"
        incoming = Incoming(message=message, message_id=message_id, attempts=attempts)
        decision = decide(self.definition, self.state, incoming, now=now)
        self._commit(decision, message_id)
        return decision

    def timeout(self, now: datetime) -> Decision:
        """Decide on the deadline at ``now`` and commit the decision (no causing message)."""
        decision = decide_timeout(self.definition, self.state, now=now)
        self._commit(decision, None)
        return decision

    def resume(self, now: datetime) -> Decision:
        """An operator resumes the saga at ``now``; the decision is committed."""
        decision = decide_resume(self.definition, self.state, now=now)
        self._commit(decision, None)
        return decision

    def expire(self) -> Decision:
        """Let the current deadline pass by one second."""
        assert self.state.deadline is not None, "no deadline is pending"
        return self.timeout(self.state.deadline + seconds(1))

    def give_up(self) -> Decision:
        """Let the current step's deadline pass until its resend budget is spent."""
        while True:
            decision = self.expire()
            if EventType.COMMAND_RESENT not in event_types(decision):
                return decision

    def _commit(self, decision: Decision, causation_id: str | None) -> None:
        self.decisions.append(decision)
        before = self.state
        self.state = commit(self.state, decision, causation_id)
        if self.state is not before:
            self.commits.append((self.state.version, causation_id, decision.events))


def started(**changes: Any) -> SagaRun:
    """A saga that accepted its start message and awaits the stock reservation."""
    run = SagaRun()
    run.receive(place_order(**changes), message_id=START_ID)
    return run


def reserved() -> SagaRun:
    """Stock reserved; awaiting the payment authorization."""
    run = started()
    run.receive(stock_reserved(), message_id="reserved-1")
    return run


def authorized() -> SagaRun:
    """Stock reserved, payment authorized; awaiting the shipment."""
    run = reserved()
    run.receive(payment_authorized(), message_id="authorized-1")
    return run


def completed() -> SagaRun:
    """Every step succeeded."""
    run = authorized()
    run.receive(shipment_scheduled(), message_id="scheduled-1")
    return run


def reservation_failed() -> SagaRun:
    """The first step was refused: the saga failed with nothing to undo."""
    run = started()
    run.receive(stock_reservation_failed(), message_id="reservation-failed-1")
    return run


def payment_refused() -> SagaRun:
    """Payment declined; compensating the stock reservation."""
    run = reserved()
    run.receive(payment_declined(), message_id="declined-1")
    return run


def compensated_after_decline() -> SagaRun:
    """Payment declined and the stock released: the saga is compensated."""
    run = payment_refused()
    run.receive(stock_released(), message_id="released-1")
    return run


def shipping_refused() -> SagaRun:
    """Shipping failed; compensating the payment first."""
    run = authorized()
    run.receive(shipment_failed(), message_id="shipment-failed-1")
    return run
