"""Saga definitions: validation, lookups and routing keys."""

from __future__ import annotations

from typing import Any

import pytest

from contracts import (
    AuthorizePayment,
    Message,
    PaymentAuthorized,
    PaymentDeclined,
    PaymentVoided,
    PlaceOrder,
    ReleaseStock,
    ReserveStock,
    SagaCompleted,
    ShipmentCancelled,
    StockReleased,
    StockReservationFailed,
    StockReserved,
    VoidPayment,
)
from orchestrator.definition import SagaDefinition, Step, routing_key
from orchestrator.order_saga import ORDER_FULFILMENT, order_fulfilment


def _step(**changes: Any) -> Step:
    fields: dict[str, Any] = {
        "name": "reserve_stock",
        "participant": "inventory",
        "command": lambda o: ReserveStock(order_id=o.order_id, lines=o.lines),
        "command_type": ReserveStock,
        "success": StockReserved,
        "failure": StockReservationFailed,
        "compensate": lambda o: ReleaseStock(order_id=o.order_id),
        "compensation_type": ReleaseStock,
        "compensated": StockReleased,
    }
    return Step(**{**fields, **changes})


def test_a_well_formed_step_is_accepted() -> None:
    step = _step()

    assert (step.timeout, step.max_sends) == (30.0, 3)


def test_a_command_of_another_participant_is_refused() -> None:
    with pytest.raises(ValueError, match=r"payment\.authorize_payment\.v1 is not a command of"):
        _step(command_type=AuthorizePayment)


def test_a_compensation_of_another_participant_is_refused() -> None:
    with pytest.raises(ValueError, match=r"payment\.void_payment\.v1 is not a command of"):
        _step(compensation_type=VoidPayment)


def test_a_participant_name_must_match_the_whole_prefix() -> None:
    with pytest.raises(ValueError, match="is not a command of participant 'inv'"):
        _step(participant="inv")


@pytest.mark.parametrize(
    "changes",
    [{"compensate": None}, {"compensated": None, "compensation_type": None}],
    ids=["compensated_without_compensate", "compensate_without_compensated"],
)
def test_compensate_and_compensated_go_together(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="compensate and compensated go together"):
        _step(**changes)


def test_a_step_without_compensation_is_accepted() -> None:
    step = _step(compensate=None, compensated=None, compensation_type=None)

    assert step.compensate is None


@pytest.mark.parametrize("changes", [{"timeout": 0}, {"timeout": -1.0}, {"max_sends": 0}], ids=str)
def test_timeout_and_max_sends_must_be_positive(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="timeout must be > 0 and max_sends >= 1"):
        _step(**changes)


def test_a_saga_needs_steps() -> None:
    with pytest.raises(ValueError, match="has no steps"):
        SagaDefinition(name="empty", start=PlaceOrder, steps=())


def test_step_names_are_unique() -> None:
    with pytest.raises(ValueError, match="duplicate step names"):
        SagaDefinition(name="twice", start=PlaceOrder, steps=(_step(), _step()))


def test_routing_key_drops_the_version() -> None:
    assert routing_key(ReserveStock) == "inventory.reserve_stock"
    assert routing_key(SagaCompleted(saga_name="s")) == "saga.completed"


def test_the_order_saga_steps_in_order() -> None:
    saga = ORDER_FULFILMENT

    assert saga.name == "order_fulfilment"
    assert saga.start is PlaceOrder
    assert [s.name for s in saga.steps] == [
        "reserve_stock",
        "authorize_payment",
        "schedule_shipment",
    ]
    assert [s.participant for s in saga.steps] == ["inventory", "payment", "shipping"]
    assert saga.index("authorize_payment") == 1
    assert saga.step("schedule_shipment") is saga.steps[2]


def test_order_fulfilment_applies_timeout_and_max_sends_to_every_step() -> None:
    saga = order_fulfilment(timeout=10, max_sends=2)

    assert {(s.timeout, s.max_sends) for s in saga.steps} == {(10, 2)}
    assert {(s.timeout, s.max_sends) for s in ORDER_FULFILMENT.steps} == {(30.0, 3)}


@pytest.mark.parametrize(
    ("reply", "step", "outcome"),
    [
        (StockReserved(order_id="o"), "reserve_stock", "success"),
        (StockReservationFailed(order_id="o", reason="r"), "reserve_stock", "failure"),
        (StockReleased(order_id="o"), "reserve_stock", "compensated"),
        (PaymentAuthorized(order_id="o", authorization_id="a"), "authorize_payment", "success"),
        (PaymentDeclined(order_id="o", reason="r"), "authorize_payment", "failure"),
        (PaymentVoided(order_id="o"), "authorize_payment", "compensated"),
        (ShipmentCancelled(order_id="o"), "schedule_shipment", "compensated"),
    ],
    ids=lambda v: v.TYPE if isinstance(v, Message) else str(v),
)
def test_step_replying_names_the_step_and_the_outcome(
    reply: Message, step: str, outcome: str
) -> None:
    found = ORDER_FULFILMENT.step_replying(reply)

    assert found is not None
    assert (found[0].name, found[1]) == (step, outcome)


@pytest.mark.parametrize(
    "msg",
    [
        ReserveStock(order_id="o", lines=({"sku": "A", "quantity": 1},)),
        SagaCompleted(saga_name="s"),
    ],
    ids=["a_command", "an_outcome"],
)
def test_messages_that_are_not_replies_belong_to_no_step(msg: Message) -> None:
    assert ORDER_FULFILMENT.step_replying(msg) is None


def test_every_order_saga_command_goes_to_its_participant() -> None:
    for step in ORDER_FULFILMENT.steps:
        assert step.command_type.TYPE.startswith(f"{step.participant}.")
        assert step.compensation_type is not None
        assert step.compensation_type.TYPE.startswith(f"{step.participant}.")
