"""The stock projection's reading of a return saga's progress: its take-back moves units
from shipped to available, its undo moves them back, and nothing else of it counts."""

from __future__ import annotations

from datetime import UTC, datetime

from contracts import ProgressEvent, SagaProgressed
from orchestrator.packs.order_fulfilment.stock import saga_movement, stock_state

LINES = [{"sku": "apple", "quantity": 2}, {"sku": "pear", "quantity": 1}]


def progressed(saga: str, version: int, *events: tuple[str, str | None]) -> SagaProgressed:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return SagaProgressed(
        saga_name=saga,
        version=version,
        status="running",
        events=tuple(ProgressEvent(type=t, step=s, at=at) for t, s in events),
        start={"lines": LINES},
    )


def test_a_return_counts_its_take_back_and_its_undo_only() -> None:
    assert stock_state(progressed("order_return", 1, ("saga_started", None))) is None
    assert stock_state(progressed("order_return", 2, ("step_succeeded", "accept_return"))) is None
    taken = progressed("order_return", 3, ("step_succeeded", "take_back_stock"))
    assert stock_state(taken) == "taken_back"
    undone = progressed("order_return", 5, ("step_compensated", "take_back_stock"))
    assert stock_state(undone) == "none"
    done = progressed("order_return", 4, ("saga_completed", None))
    assert stock_state(done) is None  # a completed return ships nothing
    late = progressed("order_return", 4, ("late_success_compensating", "take_back_stock"))
    assert stock_state(late) == "none"


def test_an_order_step_named_like_a_return_step_is_not_a_take_back() -> None:
    event = progressed("order_fulfilment", 3, ("step_succeeded", "take_back_stock"))
    assert stock_state(event) is None


def test_a_take_back_moves_shipped_units_and_its_undo_moves_them_back() -> None:
    taken = saga_movement("r", 3, "none", "taken_back", LINES)
    assert taken.increments == {"apple": {"shipped": -2}, "pear": {"shipped": -1}}
    undone = saga_movement("r", 5, "taken_back", "none", LINES)
    assert undone.increments == {"apple": {"shipped": 2}, "pear": {"shipped": 1}}
    assert taken.key != undone.key
