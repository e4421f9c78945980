"""A saga's timeline as a chart of steps over time: pure, then laid out for SVG.

:func:`build_chart` turns stored events into spans (a step's command out until its reply,
forward or compensating) and marks (resends, errors, late replies, the saga's own
events); :func:`layout` places them on a canvas. The template only draws what it gets,
so every number here is tested without a browser.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

from orchestrator.ops.timeline import describe
from orchestrator.saga.state import EventType, SagaEvent

__all__ = [
    "SAGA_LANE",
    "Chart",
    "ChartLayout",
    "Mark",
    "Span",
    "build_chart",
    "layout",
    "nice_duration",
]

SAGA_LANE = "saga"
"""The top lane: the saga's own events (started, parked, resumed, its outcome)."""

SpanKind = Literal["forward", "compensation"]
SpanEnd = Literal["ok", "refused", "timed_out", "compensated", "parked", "open"]
MarkKind = Literal["start", "resend", "error", "late", "park", "resume", "end", "other"]


@dataclass(frozen=True, kw_only=True)
class Span:
    """A step's command in flight: from sent until its reply (``end`` None: still open)."""

    lane: str
    kind: SpanKind
    start: datetime
    end: datetime | None = None
    outcome: SpanEnd = "open"
    attempts: int = 1
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class Mark:
    """Something that happened at one instant on a lane."""

    lane: str
    kind: MarkKind
    at: datetime
    label: str


@dataclass(frozen=True, kw_only=True)
class Chart:
    """Lanes top to bottom (the saga first, then its steps), spans and marks."""

    lanes: tuple[str, ...]
    spans: tuple[Span, ...]
    marks: tuple[Mark, ...]
    start: datetime
    end: datetime


_ERRORS: dict[EventType, SpanEnd] = {
    EventType.STEP_FAILED: "refused",
    EventType.STEP_TIMED_OUT: "timed_out",
}
_SAGA_MARKS: dict[EventType, MarkKind] = {
    EventType.SAGA_STARTED: "start",
    EventType.SAGA_COMPLETED: "end",
    EventType.SAGA_FAILED: "end",
    EventType.SAGA_COMPENSATED: "end",
    EventType.SAGA_RESUMED: "resume",
}


class _Builder:
    """Folds events into spans and marks; one open span per (lane, kind) at most."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.marks: list[Mark] = []
        self.open: dict[tuple[str, SpanKind], int] = {}
        self.seen_steps: list[str] = []

    def lane(self, event: SagaEvent) -> str:
        if event.step is None:
            return SAGA_LANE
        if event.step not in self.seen_steps:
            self.seen_steps.append(event.step)
        return event.step

    def begin(self, lane: str, kind: SpanKind, at: datetime) -> None:
        self.finish(lane, kind, at, "open")  # a span left open is cut where the next begins
        self.open[(lane, kind)] = len(self.spans)
        self.spans.append(Span(lane=lane, kind=kind, start=at))

    def finish(
        self, lane: str, kind: SpanKind, at: datetime, outcome: SpanEnd, detail: str = ""
    ) -> None:
        index = self.open.pop((lane, kind), None)
        if index is not None:
            span = self.spans[index]
            self.spans[index] = replace(span, end=at, outcome=outcome, detail=detail)

    def attempt(self, lane: str, kind: SpanKind, attempt: int) -> None:
        index = self.open.get((lane, kind))
        if index is not None:
            self.spans[index] = replace(self.spans[index], attempts=attempt)

    def mark(self, lane: str, kind: MarkKind, event: SagaEvent) -> None:
        reason = event.data.get("reason")
        words = describe(event.type) + (f": {reason}" if reason else "")
        if event.attempt > 1:
            words += f" (attempt {event.attempt})"
        self.marks.append(Mark(lane=lane, kind=kind, at=event.at, label=words))

    def add(self, event: SagaEvent) -> None:
        lane, kind, at = self.lane(event), event.type, event.at
        reason = str(event.data.get("reason") or "")
        if kind is EventType.STEP_STARTED:
            self.begin(lane, "forward", at)
        elif kind is EventType.STEP_SUCCEEDED:
            self.finish(lane, "forward", at, "ok")
        elif kind in _ERRORS:
            self.finish(lane, "forward", at, _ERRORS[kind], reason)
            self.mark(lane, "error", event)
        elif kind is EventType.COMMAND_RESENT:
            compensating = bool(event.data.get("compensation"))
            self.attempt(lane, "compensation" if compensating else "forward", event.attempt)
            self.mark(lane, "resend", event)
        elif kind is EventType.COMPENSATION_STARTED:
            self.begin(lane, "compensation", at)
        elif kind is EventType.STEP_COMPENSATED:
            self.finish(lane, "compensation", at, "compensated")
        elif kind is EventType.LATE_SUCCESS_COMPENSATING:
            self.mark(lane, "late", event)
            self.begin(lane, "compensation", at)
        elif kind is EventType.SAGA_PARKED:
            self.finish(lane, "compensation", at, "parked", reason)
            self.mark(lane, "error", event)
            self.mark(SAGA_LANE, "park", event)
        elif kind in _SAGA_MARKS:  # the saga's own events, whatever step they name
            self.mark(SAGA_LANE, _SAGA_MARKS[kind], event)
        else:
            self.mark(lane, "other", event)


def build_chart(
    events: Iterable[SagaEvent], *, steps: Sequence[str] = (), now: datetime | None = None
) -> Chart | None:
    """The chart of a saga's events (None if there are none). ``steps`` orders the lanes
    (the definition's steps); steps it does not name follow in order of appearance.
    ``now`` stretches the time axis of a saga still running, so open spans show how
    long they have been waiting."""
    builder = _Builder()
    ordered = list(events)
    for event in ordered:
        builder.add(event)
    if not ordered:
        return None
    start = min(e.at for e in ordered)
    end = max(e.at for e in ordered)
    if now is not None and builder.open:
        end = max(end, now)
    lanes = [SAGA_LANE, *steps]
    lanes += [s for s in builder.seen_steps if s not in lanes]
    return Chart(
        lanes=tuple(lanes),
        spans=tuple(builder.spans),
        marks=tuple(builder.marks),
        start=start,
        end=end,
    )


# --- layout -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Bar:
    """A span placed on the canvas."""

    x: float
    y: float
    width: float
    height: float
    css: str
    title: str


@dataclass(frozen=True, kw_only=True)
class Point:
    """A mark placed on the canvas."""

    x: float
    y: float
    kind: MarkKind
    title: str


@dataclass(frozen=True, kw_only=True)
class Tick:
    """A time-axis tick: its position and label."""

    x: float
    label: str


@dataclass(frozen=True, kw_only=True)
class LaneLabel:
    """A lane's name at the left, and the band it occupies."""

    y: float
    text: str
    band_y: float


@dataclass(frozen=True, kw_only=True)
class ChartLayout:
    """Everything the SVG template draws, in pixels."""

    width: int
    height: int
    plot_x: float
    plot_width: float
    lane_height: float
    bars: tuple[Bar, ...] = ()
    points: tuple[Point, ...] = ()
    ticks: tuple[Tick, ...] = ()
    labels: tuple[LaneLabel, ...] = field(default=())
    total: str = ""


LABEL_WIDTH = 170.0
AXIS_HEIGHT = 26.0
LANE_HEIGHT = 30.0
MIN_BAR = 3.0


def layout(chart: Chart, *, width: int = 960) -> ChartLayout:
    """Pixel positions for ``chart`` on a canvas ``width`` wide."""
    plot_x, plot_width = LABEL_WIDTH, width - LABEL_WIDTH - 16
    total = max((chart.end - chart.start).total_seconds(), 0.001)

    def x_of(at: datetime) -> float:
        return plot_x + plot_width * (at - chart.start).total_seconds() / total

    def y_of(lane: str) -> float:
        return AXIS_HEIGHT + chart.lanes.index(lane) * LANE_HEIGHT

    bars = []
    for span in chart.spans:
        x0 = x_of(span.start)
        x1 = x_of(span.end or chart.end)
        inset = 6.0 if span.kind == "forward" else 15.0
        bars.append(
            Bar(
                x=round(x0, 1),
                y=y_of(span.lane) + inset,
                width=round(max(x1 - x0, MIN_BAR), 1),
                height=9.0,
                css=f"span {span.kind} {span.outcome}",
                title=_span_title(span, chart.end),
            )
        )
    points = [
        Point(x=round(x_of(m.at), 1), y=y_of(m.lane) + LANE_HEIGHT / 2, kind=m.kind, title=m.label)
        for m in chart.marks
    ]
    labels = [
        LaneLabel(y=y_of(lane) + LANE_HEIGHT / 2 + 4, text=lane, band_y=y_of(lane))
        for lane in chart.lanes
    ]
    ticks = [
        Tick(x=round(plot_x + plot_width * t / total, 1), label=nice_duration(t))
        for t in _ticks(total)
    ]
    return ChartLayout(
        width=width,
        height=int(AXIS_HEIGHT + len(chart.lanes) * LANE_HEIGHT + 4),
        plot_x=plot_x,
        plot_width=plot_width,
        lane_height=LANE_HEIGHT,
        bars=tuple(bars),
        points=tuple(points),
        ticks=tuple(ticks),
        labels=tuple(labels),
        total=nice_duration(total),
    )


def _span_title(span: Span, chart_end: datetime) -> str:
    what = "compensation" if span.kind == "compensation" else "command"
    took = nice_duration(((span.end or chart_end) - span.start).total_seconds())
    state = {
        "ok": "succeeded",
        "refused": "refused",
        "timed_out": "timed out",
        "compensated": "compensated",
        "parked": "gave up: saga parked",
        "open": "no reply yet",
    }[span.outcome]
    sends = f", {span.attempts} sends" if span.attempts > 1 else ""
    detail = f": {span.detail}" if span.detail else ""
    return f"{span.lane} {what}, {took}{sends}, {state}{detail}"


def _ticks(total: float, *, wanted: int = 6) -> list[float]:
    """Tick positions in seconds at a 1-2-5 step, from 0 to ``total``."""
    raw = total / wanted
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    count = int(total / step + 1e-9)
    return [i * step for i in range(count + 1)]


def nice_duration(seconds: float) -> str:
    """0, 250 ms, 1.5 s, 2 min 30 s, 3 h 5 min."""
    if seconds <= 0:
        return "0"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.3g} s"
    rounded = timedelta(seconds=round(seconds))
    minutes, secs = divmod(int(rounded.total_seconds()), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{minutes} min {secs} s" if secs else f"{minutes} min"
