"""Reading sagas: one with its timeline, lists by status/step/age, the stuck ones; and
resuming a parked one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status

from orchestrator.api.deps import Operator, Reader, Services, services
from orchestrator.api.models import SagaView, StuckSaga, TimelineEvent, errors
from orchestrator.ops.stuck import stuck_reason
from orchestrator.ops.work import stuck_work
from orchestrator.saga.state import EventType

__all__ = ["MAX_AGE_SECONDS", "router"]

router = APIRouter(tags=["sagas"])
Svc = Annotated[Services, Depends(services)]
SagaStatus = Literal[
    "running",
    "compensating",
    "completed",
    "failed",
    "compensated",
    "compensation_failed",
    "completing_stuck",
]
IN_FLIGHT = ("running", "compensating", "compensation_failed", "completing_stuck")
MAX_AGE_SECONDS = 10 * 365 * 24 * 3600
"""Ages and thresholds go up to ten years (beyond, date arithmetic would overflow)."""
SagaId = Annotated[str, Path(min_length=1, max_length=200, description="The saga's id")]


@router.get("/sagas/stuck", response_model=list[StuckSaga], responses=errors(401, 503))
async def stuck_sagas(
    svc: Svc,
    _: Reader,
    threshold_seconds: Annotated[
        float, Query(gt=0, le=MAX_AGE_SECONDS, description="No progress for this long")
    ] = 600.0,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many")] = 100,
) -> list[StuckSaga]:
    """Parked outboxes and deadlines first (the oldest first: nothing moves them on but
    an operator), then sagas that are not terminal and have no deadline armed, are
    parked, or have made no progress for longer than the threshold, the longest idle
    first; each with the reason in words and what to do about it."""
    now = datetime.now(UTC)
    threshold = timedelta(seconds=threshold_seconds)
    found = [
        StuckSaga(
            saga_id=work.saga_id,
            status=f"{work.kind}_parked",
            step=None,
            updated_at=work.parked_at,
            reason=work.reason,
            commit_id=work.commit_id,
        )
        for work in await stuck_work(svc.client.store, now=now, limit=limit)
    ]
    for summary in await svc.summaries.stuck(idle_before=now - threshold, limit=limit):
        reason = stuck_reason(summary, now=now, threshold=threshold, registry=svc.registry)
        if reason:
            found.append(
                StuckSaga(
                    saga_id=summary["_id"],
                    status=summary["status"],
                    step=summary.get("step"),
                    updated_at=summary["updated_at"],
                    reason=reason,
                )
            )
    return found[:limit]


@router.get("/sagas", responses=errors(401, 503))
async def list_sagas(
    svc: Svc,
    *,
    _: Reader,
    status_: Annotated[list[SagaStatus] | None, Query(alias="status")] = None,
    step: Annotated[str | None, Query(max_length=200)] = None,
    older_than_seconds: Annotated[
        float | None, Query(ge=0, le=MAX_AGE_SECONDS, description="Started this long ago")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    saga_name: Annotated[str | None, Query(max_length=64)] = None,
    version: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
    in_flight: bool = False,
) -> list[dict[str, Any]]:
    """Saga summaries, most recently updated first; ``saga_name`` and ``version`` pick
    the sagas of one definition version, ``in_flight`` those not yet completed, failed
    or compensated (before removing a version: none may be left)."""
    older = timedelta(seconds=older_than_seconds) if older_than_seconds is not None else None
    docs = await svc.summaries.find(
        status=status_ or (IN_FLIGHT if in_flight else ()),
        step=step,
        older_than=older,
        now=datetime.now(UTC),
        limit=limit,
        saga_name=saga_name,
        saga_version=version,
    )
    return [{"saga_id": d.pop("_id"), **d} for d in docs]


@router.get(
    "/sagas/{saga_id}",
    response_model=SagaView,
    operation_id="get_saga",
    responses=errors(401, 404, 410, 503),
)
async def get_saga(saga_id: SagaId, svc: Svc, _: Reader, timeline: bool = True) -> SagaView:
    """A saga from the event store, with every event: time, step, attempt and error.
    410 if it finished and retention removed it."""
    history = await svc.client.history(saga_id)
    if not history:
        if await svc.client.pruned(saga_id):
            raise HTTPException(
                status.HTTP_410_GONE, f"saga {saga_id!r} finished and its history was pruned"
            )
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no saga {saga_id!r}")
    state = await svc.client.state(saga_id)
    events = (
        [
            TimelineEvent(
                version=c.version,
                type=e.type.value,
                at=e.at,
                step=e.step,
                attempt=e.attempt,
                error=str(e.data["reason"]) if e.data.get("reason") else None,
                sent=[o.type for o in c.outbox] if e is c.events[-1] else [],
            )
            for c in history
            for e in c.events
        ]
        if timeline
        else []
    )
    return SagaView(
        saga_id=saga_id,
        saga_name=state.saga_name,
        status=state.status.value if state.status else None,
        step=state.step,
        attempt=state.attempt,
        version=state.version,
        started_at=state.started_at,
        updated_at=state.updated_at,
        deadline=state.deadline,
        failed_step=state.failed_step,
        reason=state.reason,
        parked_reason=state.parked_reason,
        data=dict(state.data),
        timeline=events,
    )


@router.post("/sagas/{saga_id}/resume", responses=errors(401, 404, 409, 503))
async def resume_saga(saga_id: SagaId, svc: Svc, _: Operator) -> dict[str, object]:
    """Resume a parked saga: a compensation_failed one's compensation, or a
    completing_stuck one's retriable step."""
    commit = await svc.client.resume(saga_id)
    if commit is None:
        state = await svc.client.state(saga_id)
        if state.status is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no saga {saga_id!r}")
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"saga {saga_id} is {state.status.value}, not parked"
        )
    resent = [e for e in commit.events if e.type is not EventType.SAGA_RESUMED]
    retrying = [e.step for e in resent if e.type is EventType.STEP_STARTED]
    return {
        "saga_id": saga_id,
        "resumed": True,
        "compensating": commit.events[-1].step if not retrying else None,
        "retrying": retrying,
        "version": commit.version,
    }
