"""Outcome events of the old shape (``saga.<outcome>.v1`` with the order saga's
``order_id``) are read as v2, with a generic ``reference``, wherever they are read."""

from __future__ import annotations

import json

import pytest

from contracts import (
    MalformedMessage,
    SagaCompensated,
    SagaCompleted,
    SagaFailed,
    decode,
    resolve,
    upcast,
    validate,
)
from orchestrator.saga.commits import OutboxEntry


def _wire(body: dict[str, object]) -> bytes:
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("old_type", "body", "expected"),
    [
        (
            "saga.completed.v1",
            {"saga_name": "order_fulfilment", "order_id": "order-1"},
            SagaCompleted(saga_name="order_fulfilment", reference="order-1"),
        ),
        (
            "saga.failed.v1",
            {"saga_name": "order_fulfilment", "order_id": "order-2", "reason": "no stock"},
            SagaFailed(saga_name="order_fulfilment", reference="order-2", reason="no stock"),
        ),
        (
            "saga.compensated.v1",
            {
                "saga_name": "order_fulfilment",
                "order_id": "order-3",
                "reason": "card declined",
                "failed_step": "authorize_payment",
            },
            SagaCompensated(
                saga_name="order_fulfilment",
                reference="order-3",
                reason="card declined",
                failed_step="authorize_payment",
            ),
        ),
    ],
    ids=["completed", "failed", "compensated"],
)
def test_a_v1_outcome_off_the_wire_decodes_as_v2_with_its_reference(
    old_type: str, body: dict[str, object], expected: object
) -> None:
    assert decode(old_type, _wire(body)) == expected


def test_a_v1_outcome_without_an_order_id_has_an_empty_reference() -> None:
    assert decode("saga.completed.v1", _wire({"saga_name": "s"})) == SagaCompleted(saga_name="s")


def test_the_v1_type_resolves_to_the_v2_contract() -> None:
    assert resolve("saga.completed.v1") is SagaCompleted
    assert upcast("saga.failed.v1", {"saga_name": "s", "order_id": "o", "reason": "r"}) == (
        "saga.failed.v2",
        {"saga_name": "s", "reference": "o", "reason": "r"},
    )


def test_a_v1_outcome_stored_in_an_outbox_is_published_as_v2() -> None:
    stored = OutboxEntry.from_doc(
        {
            "kind": "event",
            "type": "saga.completed.v1",
            "body": {"saga_name": "order_fulfilment", "order_id": "order-1"},
            "message_id": "s1:completed",
            "routing_key": "order_fulfilment.completed",
        }
    )

    message = stored.message()

    assert message == SagaCompleted(saga_name="order_fulfilment", reference="order-1")
    assert message.TYPE == "saga.completed.v2"


def test_a_v1_outcome_that_is_still_malformed_is_refused_as_such() -> None:
    with pytest.raises(MalformedMessage) as raised:
        validate("saga.failed.v1", {"saga_name": "s", "order_id": "o"})

    assert raised.value.reason == "schema_violation"
    assert "reason" in raised.value.detail


def test_a_v2_outcome_with_the_old_field_is_refused() -> None:
    # Only the v1 type is upcast: a v2 body must have the v2 shape.
    with pytest.raises(MalformedMessage, match="order_id"):
        decode("saga.completed.v2", _wire({"saga_name": "s", "order_id": "o"}))
