"""Saga definitions: validation, lookups and routing keys."""

from __future__ import annotations

import dataclasses
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
from orchestrator.packs.order_fulfilment.definition import ORDER_FULFILMENT, order_fulfilment
from orchestrator.saga.definition import (
    DefinitionError,
    Retry,
    SagaDefinition,
    Step,
    parallel,
    routing_key,
)
from tests.unit.toy_saga import TOY_START, contracts, toy_saga
from tests.unit.toy_saga import step as toy_step


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


def test_a_well_formed_step_is_accepted_and_leaves_its_deadline_to_the_deployment() -> None:
    step = _step()

    assert (step.timeout, step.max_sends) == (None, None)
    assert (step.deadline_seconds, step.sends) == (30.0, 3)


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
    with pytest.raises(ValueError, match=r"(timeout must be > 0|max_sends must be at least 1)"):
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
    assert {(s.timeout, s.max_sends) for s in ORDER_FULFILMENT.steps} == {(None, None)}
    resolved = ORDER_FULFILMENT.with_defaults(timeout=7, max_sends=4)
    assert {(s.timeout, s.max_sends) for s in resolved.steps} == {(7, 4)}
    assert {(s.timeout, s.max_sends) for s in saga.with_defaults(timeout=7, max_sends=4).steps} == {
        (10, 2)
    }


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


# --- parallel groups and retriable steps ----------------------------------------------


def test_parallel_groups_make_one_stage_each_and_the_rest_run_alone() -> None:
    saga = toy_saga(3)

    assert [[s.name for s in stage] for stage in saga.stages] == [
        ["prep"],
        ["left", "middle", "right"],
        ["finish"],
        ["settle"],
    ]
    assert [s.name for s in saga.steps] == ["prep", "left", "middle", "right", "finish", "settle"]
    assert saga.stage_index("middle") == 1
    assert saga.stage_of("right") == saga.stages[1]
    assert {s.group for s in saga.stages[1]} == {"together"}


def test_a_group_needs_two_steps() -> None:
    with pytest.raises(DefinitionError, match="needs at least two steps"):
        parallel("alone", toy_step("left"))


def test_the_steps_of_a_group_must_be_next_to_each_other() -> None:
    left, right = parallel("together", toy_step("left"), toy_step("right"))
    with pytest.raises(DefinitionError, match="must be next to each other"):
        SagaDefinition(name="toy", start=TOY_START, steps=(left, toy_step("prep"), right))


def test_a_group_may_not_mix_retriable_and_compensatable_steps() -> None:
    with pytest.raises(DefinitionError, match="mixes retriable and compensatable"):
        SagaDefinition(
            name="toy",
            start=TOY_START,
            steps=parallel("mixed", toy_step("left"), toy_step("settle", retriable=True)),
        )


def test_retriable_steps_come_after_the_pivot() -> None:
    with pytest.raises(DefinitionError, match=r"retriable step 'settle' comes before"):
        SagaDefinition(
            name="toy",
            start=TOY_START,
            steps=(toy_step("settle", retriable=True), toy_step("prep")),
        )


def test_the_pivot_is_the_last_compensatable_step_when_retriable_steps_follow() -> None:
    assert toy_saga(2).pivot == "finish"
    assert ORDER_FULFILMENT.pivot is None
    only_retriable = SagaDefinition(
        name="toy", start=TOY_START, steps=(toy_step("settle", retriable=True),)
    )
    assert only_retriable.pivot is None


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        (
            {
                "compensate": lambda s: contracts("settle").undo(ref=s.ref),
                "compensation_type": contracts("settle").undo,
                "compensated": contracts("settle").undone,
            },
            "never compensated",
        ),
        ({"max_sends": 3}, r"budget is retry=Retry\(max_sends"),
    ],
)
def test_a_retriable_step_is_never_compensated_and_has_its_own_budget(
    changes: dict[str, Any], error: str
) -> None:
    step = toy_step("settle", retriable=True)
    with pytest.raises(DefinitionError, match=error):
        dataclasses.replace(step, **changes)


def test_only_a_retriable_step_may_leave_out_its_refusal() -> None:
    assert dataclasses.replace(toy_step("settle", retriable=True), failure=None).failure is None
    with pytest.raises(DefinitionError, match="needs its failure reply"):
        dataclasses.replace(toy_step("prep"), failure=None)


@pytest.mark.parametrize("changes", [{"max_sends": 0}, {"backoff": 0.5}, {"max_interval": 0}])
def test_retry_policies_are_checked(changes: dict[str, Any]) -> None:
    with pytest.raises(DefinitionError, match="Retry"):
        Retry(**changes)


def test_a_retriable_step_waits_longer_after_each_send_up_to_its_cap() -> None:
    step = dataclasses.replace(
        toy_step("settle", retriable=True),
        timeout=5,
        retry=Retry(max_sends=9, backoff=3, max_interval=100),
    )

    assert [step.wait_after(n) for n in range(1, 6)] == [5, 15, 45, 100, 100]
    assert step.sends == 9
    assert toy_step("prep").wait_after(4) == toy_step("prep").deadline_seconds


def test_deployment_defaults_leave_a_retriable_budget_alone() -> None:
    step = dataclasses.replace(toy_step("settle", retriable=True), timeout=None)
    saga = SagaDefinition(name="toy", start=TOY_START, steps=(toy_step("prep"), step))

    resolved = saga.with_defaults(timeout=7, max_sends=4)

    assert resolved.step("settle").timeout == 7
    assert resolved.step("settle").max_sends is None
    assert resolved.step("settle").sends == step.retry.max_sends  # type: ignore[union-attr]
    assert resolved.step("prep").max_sends == toy_step("prep").max_sends
