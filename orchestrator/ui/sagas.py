"""Saga pages: the list (filtered, paged), one saga with its timeline chart, the stuck
ones with the reason in words; and resuming a parked saga."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Query, Request
from fastapi.responses import RedirectResponse, Response

from orchestrator.ops.stuck import stuck_reason
from orchestrator.ops.timeline import describe
from orchestrator.ops.work import live_work, live_work_line, stuck_work
from orchestrator.saga.state import Status, replay
from orchestrator.ui.app import PREFIX, Svc, browser, ui_router
from orchestrator.ui.auth import Refused, Viewer, reader, require_operator
from orchestrator.ui.chart import build_chart, layout
from orchestrator.ui.queries import PARKED, BadCursor, Cursor, SagaBrowser, SagaFilter
from orchestrator.ui.render import page, parse_duration

if TYPE_CHECKING:
    from orchestrator.saga.commits import Commit
    from orchestrator.saga.registry import SagaRegistry

__all__ = ["router"]

router = ui_router()
Read = Annotated[Viewer, Depends(reader)]
Change = Annotated[Viewer, Depends(require_operator)]
Browser = Annotated[SagaBrowser, Depends(browser)]
Text = Annotated[str, Query(max_length=200)]
STATUSES = tuple(s.value for s in Status)
STUCK_LIMIT = 200
STUCK_LIVE_CAP = 10_000
"""The stuck page counts each live set up to this many (from its own index)."""


@router.get("/")
async def home() -> Response:
    """The saga list is the front page."""
    return RedirectResponse(f"{PREFIX}/sagas", status_code=303)


def _filter(
    registry: SagaRegistry, saga: str, statuses: list[str], step: str, age: str
) -> tuple[SagaFilter, list[str]]:
    """The filter the form asks for, and what is wrong with it (nothing read if any)."""
    problems = []
    unknown = sorted(set(statuses) - set(STATUSES))
    if unknown:
        problems.append(f"unknown status {', '.join(unknown)}; one of {', '.join(STATUSES)}")
    if step and not saga:
        problems.append("a step belongs to a saga: choose the saga too")
    min_age: timedelta | None = None
    if age:
        try:
            min_age = parse_duration(age)
        except ValueError as e:
            problems.append(str(e))
    if saga and step and saga in registry:
        known = {s.name for v in registry.versions(saga) for s in registry.get(saga, v).steps}
        if step not in known:
            problems.append(f"{saga} has no step {step!r}; its steps: {', '.join(sorted(known))}")
    where = SagaFilter(
        saga_name=saga or None, statuses=tuple(statuses), step=step or None, min_age=min_age
    )
    return where, problems


def _steps_by_saga(registry: SagaRegistry) -> dict[str, list[str]]:
    steps: dict[str, list[str]] = {}
    for name in registry.names:
        for version in registry.versions(name):
            for step in registry.get(name, version).steps:
                if step.name not in steps.setdefault(name, []):
                    steps[name].append(step.name)
    return steps


@router.get("/sagas")
async def saga_list(
    request: Request,
    *,
    svc: Svc,
    viewer: Read,
    sagas: Browser,
    saga: Text = "",
    status: Annotated[list[str] | None, Query(max_length=40)] = None,
    step: Text = "",
    age: Text = "",
    after: Annotated[str, Query(max_length=400)] = "",
) -> Response:
    """Saga summaries, newest first, a page at a time."""
    where, problems = _filter(svc.registry, saga, status or [], step, age)
    cursor = None
    if after:
        try:
            cursor = Cursor.decode(after)
        except BadCursor as e:
            problems.append(str(e))
    rows: list[dict[str, Any]] = []
    next_link = None
    if not problems:
        found = await sagas.page(where, after=cursor)
        rows = found.rows
        if found.next is not None:
            params = [*_params(saga, status or [], step, age), ("after", found.next.encode())]
            next_link = f"{PREFIX}/sagas?{urlencode(params)}"
    first_link = f"{PREFIX}/sagas?{urlencode(_params(saga, status or [], step, age))}"
    return page(
        request,
        "sagas.html",
        viewer,
        status_code=400 if problems else 200,
        rows=rows,
        problems=problems,
        form={"saga": saga, "status": status or [], "step": step, "age": age},
        statuses=STATUSES,
        steps=_steps_by_saga(svc.registry),
        next_link=next_link,
        first_link=first_link if cursor else None,
    )


def _params(saga: str, statuses: list[str], step: str, age: str) -> list[tuple[str, str]]:
    given = [("saga", saga), *(("status", s) for s in statuses), ("step", step), ("age", age)]
    return [(k, v) for k, v in given if v]


def _events_table(history: list[Commit]) -> list[dict[str, Any]]:
    rows = []
    for commit in history:
        for event in commit.events:
            rows.append(
                {
                    "version": commit.version,
                    "at": event.at,
                    "step": event.step,
                    "type": event.type.value,
                    "what": describe(event.type),
                    "attempt": event.attempt,
                    "reason": event.data.get("reason"),
                    "sent": [o.type for o in commit.outbox] if event is commit.events[-1] else [],
                }
            )
    return rows


@router.get("/sagas/{saga_id}")
async def saga_page(request: Request, saga_id: str, svc: Svc, viewer: Read) -> Response:
    """One saga: its state and data, a chart of its steps over time, every event."""
    history = await svc.client.history(saga_id)
    if not history:
        return page(
            request, "problem.html", viewer, status_code=404, message=f"no saga {saga_id!r}"
        )
    state = replay(saga_id, ((c.version, c.causation_id, c.events) for c in history))
    now = datetime.now(UTC)
    steps: list[str] = []
    if svc.registry.knows(state.saga_name, state.saga_version):
        steps = [s.name for s in svc.registry.get(state.saga_name, state.saga_version).steps]
    chart = build_chart(
        (e for c in history for e in c.events),
        steps=steps,
        now=None if state.status and state.status.settled else now,
    )
    summary = await svc.summaries.get(saga_id)
    stuck = None
    if summary is not None:
        stuck = stuck_reason(
            summary, now=now, threshold=timedelta(minutes=10), registry=svc.registry
        )
    return page(
        request,
        "saga.html",
        viewer,
        saga_id=saga_id,
        state=state,
        status=state.status.value if state.status else None,
        parked=state.status is not None and state.status.value in PARKED,
        settled=state.status is not None and state.status.settled,
        chart=layout(chart) if chart else None,
        events=_events_table(history),
        stuck=stuck,
    )


@router.post("/sagas/{saga_id}/resume")
async def resume(saga_id: str, svc: Svc, viewer: Change) -> Response:
    """Resume a parked saga (as ``POST /sagas/{id}/resume`` does), then show it."""
    del viewer
    commit = await svc.client.resume(saga_id)
    if commit is None:
        state = await svc.client.state(saga_id)
        if state.status is None:
            raise Refused(f"no saga {saga_id!r}", status_code=404)
        raise Refused(f"saga {saga_id} is {state.status.value}, not parked", status_code=409)
    return RedirectResponse(f"{PREFIX}/sagas/{saga_id}?notice=resumed", status_code=303)


@router.get("/stuck")
async def stuck(
    request: Request,
    *,
    svc: Svc,
    viewer: Read,
    sagas: Browser,
    idle: Annotated[str, Query(max_length=40)] = "10m",
) -> Response:
    """Parked outboxes and deadlines, then sagas that need a look, the longest idle
    first, each with the reason in words."""
    try:
        threshold = parse_duration(idle)
    except ValueError as e:
        return page(
            request,
            "stuck.html",
            viewer,
            status_code=400,
            rows=[],
            problem=str(e),
            idle=idle,
            limit=STUCK_LIMIT,
            work=[],
            live=None,
        )
    now = datetime.now(UTC)
    work = await stuck_work(svc.client.store, now=now, limit=STUCK_LIMIT)
    live = live_work_line(await live_work(svc.client.store, cap=STUCK_LIVE_CAP))
    rows = []
    for summary in await sagas.stuck_candidates(idle_before=now - threshold, limit=STUCK_LIMIT):
        reason = stuck_reason(summary, now=now, threshold=threshold, registry=svc.registry)
        if reason:
            rows.append({**summary, "reason": reason, "parked": summary["status"] in PARKED})
    return page(
        request,
        "stuck.html",
        viewer,
        rows=rows,
        problem=None,
        idle=idle,
        limit=STUCK_LIMIT,
        work=work,
        live=live,
    )
