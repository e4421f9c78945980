"""Reading sagas: one with its timeline, lists by status/step/age, the stuck ones; and
resuming a parked one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, status

from orchestrator.api.deps import Operator, Services, services
from orchestrator.api.models import SagaView, StuckSaga, TimelineEvent
from participants.readside.stuck import stuck_reason

__all__ = ["router"]

router = APIRouter(tags=["sagas"])
Svc = Annotated[Services, Depends(services)]
STATUSES = {"running", "compensating", "completed", "failed", "compensated", "compensation_failed"}


@router.get("/sagas/stuck", response_model=list[StuckSaga])
async def stuck_sagas(
    svc: Svc, threshold_seconds: Annotated[float, Query(gt=0)] = 600.0
) -> list[StuckSaga]:
    """Sagas that are not terminal and have no deadline armed, are parked, or have made
    no progress for longer than the threshold; each with the reason in words."""
    now = datetime.now(UTC)
    found = []
    async for summary in svc.summaries.unsettled():
        reason = stuck_reason(summary, now=now, threshold=timedelta(seconds=threshold_seconds))
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
    return sorted(found, key=lambda s: s.updated_at)


@router.get("/sagas")
async def list_sagas(
    svc: Svc,
    status_: Annotated[list[str] | None, Query(alias="status")] = None,
    step: str | None = None,
    older_than_seconds: Annotated[float | None, Query(ge=0)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, object]]:
    """Saga summaries, most recently updated first."""
    unknown = set(status_ or ()) - STATUSES
    if unknown:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"unknown status {sorted(unknown)}; one of {sorted(STATUSES)}",
        )
    older = timedelta(seconds=older_than_seconds) if older_than_seconds is not None else None
    docs = await svc.summaries.find(
        status=status_ or (), step=step, older_than=older, now=datetime.now(UTC), limit=limit
    )
    return [{"saga_id": d.pop("_id"), **d} for d in docs]


@router.get("/sagas/{saga_id}", response_model=SagaView)
async def get_saga(saga_id: str, svc: Svc, timeline: bool = True) -> SagaView:
    """A saga from the event store, with every event: time, step, attempt and error."""
    history = await svc.client.history(saga_id)
    if not history:
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


@router.post("/sagas/{saga_id}/resume")
async def resume_saga(saga_id: str, svc: Svc, _: Operator) -> dict[str, object]:
    """Resume a parked (compensation_failed) saga's compensation."""
    commit = await svc.client.resume(saga_id)
    if commit is None:
        state = await svc.client.state(saga_id)
        if state.status is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no saga {saga_id!r}")
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"saga {saga_id} is {state.status.value}, not parked"
        )
    return {
        "saga_id": saga_id,
        "resumed": True,
        "compensating": commit.events[-1].step,
        "version": commit.version,
    }
