"""Dead-letter queues over HTTP: list, inspect, replay (dry run, rate limit), discard."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from pydantic import Field, StrictBool, StrictFloat, field_validator
from pydantic.json_schema import SkipJsonSchema

from orchestrator.api.deps import Operator, Reader, Services, services
from orchestrator.api.models import DeadLetterFilter, errors
from orchestrator.ops import (
    DlqBusy,
    DlqError,
    Selector,
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

    dry_run: StrictBool = Field(default=False, description="only say what would be replayed")
    rate: Annotated[StrictFloat, Field(gt=0, le=10_000)] | SkipJsonSchema[None] = Field(
        default=None, description="at most this many messages per second (default: no limit)"
    )

    @field_validator("rate", mode="before")
    @classmethod
    def _rate_not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("leave rate out for no limit instead of sending null")
        return value

    to: Literal["work_queue", "original"] = Field(
        default="work_queue",
        description="the work queue it failed in, or its original exchange and routing key",
    )


class DiscardRequest(DeadLetterFilter):
    """Which dead letters to discard, and why."""

    reason: str = Field(
        min_length=1,
        max_length=1000,
        pattern=r"\S",
        description="why they are discarded: kept with each discarded message",
    )
    dry_run: StrictBool = Field(default=False, description="only say what would be discarded")


def _selector(f: DeadLetterFilter) -> Selector:
    criteria = f.criteria()
    reason = criteria.pop("error_reason", None)
    return Selector(everything=not criteria and reason is None, reason=reason, **criteria)


def _refuse(e: DlqError) -> HTTPException:
    if isinstance(e, DlqBusy):
        return HTTPException(status.HTTP_409_CONFLICT, str(e), headers={"Retry-After": "5"})
    # Anything else: an unknown name, or a queue this deployment names but the broker
    # does not have (the services never declared it).
    return HTTPException(status.HTTP_404_NOT_FOUND, str(e))


QueueName = Annotated[
    str,
    Path(
        min_length=1,
        max_length=255,
        description="A dead-letter queue or its work queue, with or without the namespace: "
        "payment.commands",
    ),
]


@router.get("/dead-letters", responses=errors(401, 503))
async def dead_letter_queues(svc: Svc, _: Reader) -> list[dict[str, Any]]:
    """Every dead-letter queue with its depth."""
    return [vars(q) for q in await list_dead_letters(svc.client.bus)]


@router.get("/dead-letters/{queue}", responses=errors(401, 404, 409, 503))
async def dead_letters(
    queue: QueueName, svc: Svc, _: Reader, limit: Annotated[int, Query(ge=1, le=500)] = 20
) -> list[dict[str, Any]]:
    """Messages in a dead-letter queue, with headers and decoded body (nothing removed),
    the reason in words (also for messages the broker dead-lettered itself). 409 while
    a replay or discard of the queue runs."""
    try:
        letters = await peek(svc.client.bus, queue, limit=limit)
    except DlqError as e:
        raise _refuse(e) from None
    return [letter.to_dict() for letter in letters]


@router.post("/dead-letters/{queue}/replay", responses=errors(400, 401, 404, 409, 413, 503))
async def replay_dead_letters(
    queue: QueueName, body: ReplayRequest, svc: Svc, _: Operator
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


@router.post("/dead-letters/{queue}/discard", responses=errors(400, 401, 404, 409, 413, 503))
async def discard_dead_letters(
    queue: QueueName, body: DiscardRequest, svc: Svc, _: Operator
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
