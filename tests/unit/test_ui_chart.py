"""The UI's pure parts: the timeline chart, page tokens, filters and durations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orchestrator.saga.state import EventType, SagaEvent
from orchestrator.ui.chart import SAGA_LANE, build_chart, layout, nice_duration
from orchestrator.ui.queries import BadCursor, Cursor, SagaFilter
from orchestrator.ui.render import parse_duration

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
STEPS = ("reserve_stock", "authorize_payment", "schedule_shipment")


def ev(
    kind: EventType, ms: int, step: str | None = None, attempt: int = 1, **data: Any
) -> SagaEvent:
    return SagaEvent(
        type=kind, at=T0 + timedelta(milliseconds=ms), step=step, attempt=attempt, data=data
    )


COMPENSATED = [
    ev(EventType.SAGA_STARTED, 0),
    ev(EventType.STEP_STARTED, 0, "reserve_stock"),
    ev(EventType.STEP_SUCCEEDED, 100, "reserve_stock"),
    ev(EventType.STEP_STARTED, 100, "authorize_payment"),
    ev(EventType.COMMAND_RESENT, 400, "authorize_payment", 2),
    ev(EventType.STEP_SUCCEEDED, 450, "authorize_payment", 2),
    ev(EventType.STEP_STARTED, 450, "schedule_shipment"),
    ev(EventType.STEP_FAILED, 600, "schedule_shipment", reason="no carrier to 'Atlantis'"),
    ev(EventType.COMPENSATION_STARTED, 600, "authorize_payment"),
    ev(EventType.STEP_COMPENSATED, 700, "authorize_payment"),
    ev(EventType.COMPENSATION_STARTED, 700, "reserve_stock"),
    ev(EventType.STEP_COMPENSATED, 800, "reserve_stock"),
    ev(EventType.SAGA_COMPENSATED, 800),
]


def test_a_compensated_saga_has_forward_and_compensation_spans_and_its_marks() -> None:
    chart = build_chart(COMPENSATED, steps=STEPS)
    assert chart is not None
    assert chart.lanes == (SAGA_LANE, *STEPS)
    spans = [(s.lane, s.kind, s.outcome, s.attempts) for s in chart.spans]
    assert spans == [
        ("reserve_stock", "forward", "ok", 1),
        ("authorize_payment", "forward", "ok", 2),
        ("schedule_shipment", "forward", "refused", 1),
        ("authorize_payment", "compensation", "compensated", 1),
        ("reserve_stock", "compensation", "compensated", 1),
    ]
    assert chart.spans[2].detail == "no carrier to 'Atlantis'"
    marks = [(m.lane, m.kind) for m in chart.marks]
    assert marks == [
        (SAGA_LANE, "start"),
        ("authorize_payment", "resend"),
        ("schedule_shipment", "error"),
        (SAGA_LANE, "end"),
    ]
    assert "attempt 2" in chart.marks[1].label
    assert (chart.start, chart.end) == (T0, T0 + timedelta(milliseconds=800))


def test_a_parked_saga_ends_its_compensation_as_parked_and_a_resume_starts_another() -> None:
    events = [
        ev(EventType.SAGA_STARTED, 0),
        ev(EventType.STEP_STARTED, 0, "reserve_stock"),
        ev(EventType.STEP_TIMED_OUT, 1000, "reserve_stock", reason="no reply"),
        ev(EventType.COMPENSATION_STARTED, 1000, "reserve_stock"),
        ev(EventType.SAGA_PARKED, 2000, "reserve_stock", reason="no reply to release"),
        ev(EventType.SAGA_RESUMED, 5000, "reserve_stock"),
        ev(EventType.COMPENSATION_STARTED, 5000, "reserve_stock"),
    ]
    now = T0 + timedelta(seconds=9)
    chart = build_chart(events, steps=STEPS, now=now)
    assert chart is not None
    outcomes = [(s.kind, s.outcome, s.end) for s in chart.spans]
    assert outcomes == [
        ("forward", "timed_out", T0 + timedelta(seconds=1)),
        ("compensation", "parked", T0 + timedelta(seconds=2)),
        ("compensation", "open", None),
    ]
    assert chart.end == now, "a saga still waiting stretches the axis to now"
    assert [m.kind for m in chart.marks] == ["start", "error", "error", "park", "resume"]


def test_a_late_success_and_unknown_steps_get_marks_and_lanes() -> None:
    events = [
        ev(EventType.SAGA_STARTED, 0),
        ev(EventType.STEP_STARTED, 0, "extra_step"),
        ev(EventType.LATE_SUCCESS_COMPENSATING, 50, "schedule_shipment"),
    ]
    chart = build_chart(events, steps=STEPS)
    assert chart is not None
    assert chart.lanes == (SAGA_LANE, *STEPS, "extra_step")
    assert chart.marks[-1].kind == "late"
    assert chart.spans[-1].kind == "compensation"
    assert build_chart([]) is None


def test_layout_places_everything_inside_the_canvas_in_time_order() -> None:
    chart = build_chart(COMPENSATED, steps=STEPS)
    assert chart is not None
    drawn = layout(chart, width=900)
    assert drawn.width == 900
    assert drawn.height == 26 + 4 * 30 + 4
    xs = [b.x for b in drawn.bars]
    assert xs == sorted(xs)
    for bar in drawn.bars:
        assert drawn.plot_x <= bar.x
        assert bar.x + bar.width <= drawn.plot_x + drawn.plot_width + 0.5
        assert bar.width >= 3
    assert [t.label for t in drawn.ticks] == ["0", "200 ms", "400 ms", "600 ms", "800 ms"]
    assert drawn.total == "800 ms"
    assert "2 sends" in drawn.bars[1].title
    assert drawn.bars[2].title.endswith("refused: no carrier to 'Atlantis'")


def test_a_saga_of_one_instant_still_has_an_axis() -> None:
    chart = build_chart([ev(EventType.SAGA_STARTED, 0)])
    assert chart is not None
    drawn = layout(chart)
    assert drawn.ticks
    assert drawn.points[0].x == drawn.plot_x


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (0, "0"),
        (0.25, "250 ms"),
        (1.5, "1.5 s"),
        (150, "2 min 30 s"),
        (7200, "2 h"),
        (11100, "3 h 5 min"),
    ],
)
def test_nice_duration(seconds: float, words: str) -> None:
    assert nice_duration(seconds) == words


def test_page_tokens_round_trip_and_foreign_ones_are_refused() -> None:
    cursor = Cursor(started_at=T0, saga_id="saga-1")
    assert Cursor.decode(cursor.encode()) == cursor
    for bad in ("", "not-a-token", "W10", "WyJ4IiwgMV0"):
        with pytest.raises(BadCursor):
            Cursor.decode(bad)


def test_filters_become_one_equality_per_field_and_a_bound_on_the_start() -> None:
    assert SagaFilter().query(T0) == {}
    where = SagaFilter(
        saga_name="order_fulfilment",
        statuses=("running", "compensating"),
        step="authorize_payment",
        min_age=timedelta(hours=1),
    )
    assert where.query(T0) == {
        "saga_name": "order_fulfilment",
        "status": {"$in": ["running", "compensating"]},
        "step": "authorize_payment",
        "started_at": {"$lte": T0 - timedelta(hours=1)},
    }
    assert SagaFilter(statuses=("failed",)).query(T0) == {"status": "failed"}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("90s", 90),
        ("10m", 600),
        ("10 min", 600),
        ("2h", 7200),
        ("1.5d", 129600),
        ("250ms", 0.25),
    ],
)
def test_durations_operators_type(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "soon", "-5m", "10 years", "1e9d"])
def test_durations_that_are_not(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|ten years"):
        parse_duration(text)
