"""Stored saga events of older shapes, as raw dicts, upcast on read."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from orchestrator.saga.state import EventType, SagaEvent, Status, replay
from orchestrator.saga.upcasters import (
    EVENT_UPCASTERS,
    EventSchemaError,
    EventUpcasters,
    current_schema,
    upcast_event,
)

AT = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
ORDER = {
    "order_id": "order-1",
    "customer_id": "customer-1",
    "lines": [{"sku": "apple", "quantity": 2}],
    "amount_cents": 1_000,
    "currency": "EUR",
    "ship_to": "1 Main Street",
}


def old(kind: str, step: str | None = None, **data: Any) -> dict[str, Any]:
    """An event as the previous release stored it: no ``schema``."""
    return {"type": kind, "at": AT, "step": step, "attempt": 1, "data": data}


def old_started() -> dict[str, Any]:
    return old("saga_started", saga_name="order_fulfilment", start=ORDER, reference="order-1")


def test_an_old_saga_started_runs_on_version_1() -> None:
    doc = old_started()

    event = SagaEvent.from_doc(doc)

    assert event.data["saga_version"] == 1
    assert event.data["saga_name"] == "order_fulfilment"
    assert "schema" not in doc, "the stored document is not changed"


def test_an_old_saga_parked_was_a_compensation_that_kept_failing() -> None:
    event = SagaEvent.from_doc(old("saga_parked", "reserve_stock", reason="no reply"))

    assert event.data == {"reason": "no reply", "phase": "compensation"}


def test_a_saga_started_with_a_version_keeps_it() -> None:
    doc = old_started()
    doc["data"]["saga_version"] = 3

    assert SagaEvent.from_doc(doc).data["saga_version"] == 3


def test_new_events_are_written_at_the_current_schema_and_read_back_unchanged() -> None:
    event = SagaEvent(
        type=EventType.SAGA_PARKED,
        at=AT,
        step="settle",
        data={"reason": "r", "phase": "completion"},
    )

    doc = event.to_doc()

    assert doc["schema"] == 2 == current_schema("saga_parked")
    assert SagaEvent.from_doc(doc) == event
    assert current_schema("step_started") == 1


def test_an_event_of_a_newer_schema_is_refused_with_a_clear_error() -> None:
    doc = {**old("saga_parked", "x", reason="r", phase="completion"), "schema": 9}

    with pytest.raises(EventSchemaError, match="schema 9; this release reads up to 2"):
        upcast_event(doc)


def test_an_old_parked_order_saga_replays_to_compensation_failed() -> None:
    """The whole history of a saga parked by the previous release, from raw documents."""
    deadline = AT
    commits = [
        [old_started(), old("step_started", "reserve_stock", deadline=deadline)],
        [old("step_succeeded", "reserve_stock"), old("step_started", "authorize_payment")],
        [
            old("step_failed", "authorize_payment", reason="card declined"),
            old("compensation_started", "reserve_stock", deadline=deadline),
        ],
        [old("command_resent", "reserve_stock", deadline=deadline, compensation=True)],
        [old("saga_parked", "reserve_stock", reason="no reply to reserve_stock after 2 sends")],
    ]

    state = replay(
        "s-1",
        (
            (n, f"m-{n}", [SagaEvent.from_doc(e) for e in events])
            for n, events in enumerate(commits, 1)
        ),
    )

    assert state.status is Status.COMPENSATION_FAILED
    assert (state.saga_name, state.saga_version, state.reference) == (
        "order_fulfilment",
        1,
        "order-1",
    )
    assert state.step == "reserve_stock"
    assert state.parked_steps == ("reserve_stock",)
    assert state.deadline is None
    assert (state.failed_step, state.reason) == ("authorize_payment", "card declined")
    assert state.done == ("reserve_stock",)


def test_an_old_completed_order_saga_without_retriable_steps_reads_as_completed() -> None:
    steps = ("reserve_stock", "authorize_payment", "schedule_shipment")
    commits = [[old_started(), old("step_started", steps[0], deadline=AT)]]
    for done, following in zip(steps, (*steps[1:], None), strict=True):
        tail = old("step_started", following, deadline=AT) if following else old("saga_completed")
        commits.append([old("step_succeeded", done), tail])

    state = replay(
        "s-2",
        ((n, None, [SagaEvent.from_doc(e) for e in events]) for n, events in enumerate(commits, 1)),
    )

    assert state.status is Status.COMPLETED
    assert state.done == steps
    assert state.awaiting == ()


def test_a_chain_runs_every_step_in_order() -> None:
    chains = EventUpcasters({"thing_happened": 4})
    seen: list[int] = []

    def link(n: int) -> Any:
        def up(doc: dict[str, Any]) -> dict[str, Any]:
            seen.append(n)
            return {**doc, "data": {**doc["data"], f"v{n + 1}": True}}

        return up

    for n in (1, 2, 3):
        chains.register("thing_happened", n)(link(n))

    doc = chains.upcast({"type": "thing_happened", "schema": 2, "data": {}})

    assert seen == [2, 3]
    assert doc == {"type": "thing_happened", "schema": 4, "data": {"v3": True, "v4": True}}


def test_a_missing_link_or_a_second_upcaster_is_refused() -> None:
    chains = EventUpcasters({"thing_happened": 3})
    chains.register("thing_happened", 1)(lambda doc: doc)

    with pytest.raises(EventSchemaError, match="no upcaster for 'thing_happened' from schema 2"):
        chains.upcast({"type": "thing_happened", "data": {}})
    with pytest.raises(ValueError, match="already has an upcaster"):
        chains.register("thing_happened", 1)(lambda doc: doc)
    with pytest.raises(ValueError, match="is at schema 3"):
        chains.register("thing_happened", 3)(lambda doc: doc)


def test_every_current_schema_has_a_complete_chain() -> None:
    for kind, schema in EVENT_UPCASTERS.current.items():
        doc = EVENT_UPCASTERS.upcast({"type": kind, "data": {}})
        assert doc["schema"] == schema
