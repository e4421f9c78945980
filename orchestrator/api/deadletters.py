"""Dead-letter queues over HTTP: list, inspect, replay (dry run, rate limit), discard."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import ConfigDict, Field

from orchestrator.api.deps import Operator, Services, services
from orchestrator.api.models import DeadLetterFilter
from orchestrator.ops import (
    DlqError,
    Selector,
    UnknownQueue,
    discard,
    list_dead_letters,
    peek,
    replay,
)

__all__ = ["router"]

router = APIRouter(tags=["dead letters"])
Svc = Annotated[Services, Depends(services)]


class ReplayRequest(DeadLetterFilter):
    """Which dead letters to replay, and how."""

    dry_run: bool = False
    rate: float | None = Field(
        default=None, gt=0, le=10_000, description="at most this many messages per second"
    )
    to: str = Field(
        default="work_queue",
        pattern="^(work_queue|original)$",
        description="the work queue it failed in, or its original exchange",
    )


class DiscardRequest(DeadLetterFilter):
    """Which dead letters to discard, and why."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=1000)
    dry_run: bool = False


def _selector(f: DeadLetterFilter) -> Selector:
    try:
        return Selector(
            everything=f.all,
            message_id=f.message_id,
            saga_id=f.saga_id,
            type=f.type,
            reason=f.reason,
        )
    except DlqError as e:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(e)) from None


def _refuse(e: DlqError) -> HTTPException:
    code = status.HTTP_404_NOT_FOUND if isinstance(e, UnknownQueue) else 400
    return HTTPException(code, str(e))


@router.get("/dead-letters")
async def dead_letter_queues(svc: Svc) -> list[dict[str, Any]]:
    """Every dead-letter queue with its depth."""
    return [vars(q) for q in await list_dead_letters(svc.client.bus)]


@router.get("/dead-letters/{queue}")
async def dead_letters(
    queue: str, svc: Svc, limit: Annotated[int, Query(ge=1, le=500)] = 20
) -> list[dict[str, Any]]:
    """Messages in a dead-letter queue, with headers and decoded body (nothing removed).
    ``queue`` may be short: ``payment.commands``."""
    try:
        letters = await peek(svc.client.bus, queue, limit=limit)
    except DlqError as e:
        raise _refuse(e) from None
    return [letter.to_dict() for letter in letters]


@router.post("/dead-letters/{queue}/replay")
async def replay_dead_letters(
    queue: str, body: ReplayRequest, svc: Svc, _: Operator
) -> dict[str, Any]:
    """Send selected dead letters back to be processed (or, with dry_run, say which)."""
    try:
        report = await replay(
            svc.client.bus,
            queue,
            selector=_selector(body),
            dry_run=body.dry_run,
            rate_per_second=body.rate,
            target="original" if body.to == "original" else "work_queue",
        )
    except DlqError as e:
        raise _refuse(e) from None
    return report.to_dict()


@router.post("/dead-letters/{queue}/discard")
async def discard_dead_letters(
    queue: str, body: DiscardRequest, svc: Svc, _: Operator
) -> dict[str, Any]:
    """Remove selected dead letters, storing each with the reason first."""
    try:
        report = await discard(
            svc.client.bus,
            queue,
            selector=_selector(body),
            reason=body.reason,
            database=svc.db,
            actor="api",
            dry_run=body.dry_run,
        )
    except DlqError as e:
        raise _refuse(e) from None
    return report.to_dict()
