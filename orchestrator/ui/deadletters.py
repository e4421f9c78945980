"""Dead-letter pages: every queue with its depth, a queue's messages with their headers
and decoded bodies, and replay and discard, each shown first as a dry run.

The same functions serve the CLI and the API (:mod:`orchestrator.ops`); a dry run takes
and puts back the very messages the real run would act on, so what it shows is what the
confirmation does, unless the queue changed in between (the real run's report says).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Depends, Form, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from orchestrator.ops import (
    DlqError,
    Selector,
    UnknownQueue,
    discard,
    list_dead_letters,
    peek,
    replay,
)
from orchestrator.ui.app import Svc, ui_router
from orchestrator.ui.auth import Refused, Viewer, reader, require_operator
from orchestrator.ui.render import page

if TYPE_CHECKING:
    from orchestrator.ops import DeadLetter, DlqReport

__all__ = ["router"]

router = ui_router()
Read = Annotated[Viewer, Depends(reader)]
Change = Annotated[Viewer, Depends(require_operator)]
Target = Literal["work_queue", "original"]
BODY_SHOWN = 64 * 1024
"""Characters of a body shown on the page; the rest is cut (with a note)."""


def _refusal(e: DlqError) -> Refused:
    return Refused(str(e), status_code=404 if isinstance(e, UnknownQueue) else 400)


@router.get("/dead-letters")
async def queues(request: Request, svc: Svc, viewer: Read) -> Response:
    """Every dead-letter queue of the deployment with the number of messages in it."""
    found = await list_dead_letters(svc.client.bus)
    total = sum(q.messages for q in found)
    return page(request, "dead_letters.html", viewer, queues=found, total=total)


def _shown(letter: DeadLetter) -> dict[str, Any]:
    """A dead letter for the template: never raises, whatever the body is."""
    text = letter.body_text
    cut = len(text) > BODY_SHOWN
    failed_at = letter.headers.get("x-last-failure-at") or letter.headers.get("x-first-failure-at")
    return {
        "letter": letter,
        "body": text[:BODY_SHOWN],
        "cut": cut,
        "size": len(letter.body),
        "error": letter.headers.get("x-error-message"),
        "failed_at": failed_at,
        "attempt": letter.headers.get("x-attempt"),
    }


@router.get("/dead-letters/{queue}")
async def queue_page(
    request: Request,
    queue: str,
    svc: Svc,
    viewer: Read,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> Response:
    """The oldest messages of one dead-letter queue (left in it), decoded for reading."""
    try:
        letters = await peek(svc.client.bus, queue, limit=limit)
    except DlqError as e:
        raise _refusal(e) from None
    return page(
        request,
        "queue.html",
        viewer,
        queue=queue,
        letters=[_shown(x) for x in letters],
        limit=limit,
    )


class Selection(BaseModel):
    """The form of a replay or a discard: which messages, and whether it is confirmed
    (without ``confirmed``, it is the dry run). Other fields (token, csrf) are ignored."""

    model_config = ConfigDict(extra="ignore")

    message_id: str = Field(default="", max_length=400)
    saga_id: str = Field(default="", max_length=400)
    type: str = Field(default="", max_length=400)
    error_reason: str = Field(default="", max_length=400)
    everything: Literal["", "yes"] = ""
    confirmed: Literal["", "yes"] = ""
    to: Target = "work_queue"
    reason: str = Field(default="", max_length=1000)
    """Why the messages are discarded (required to confirm a discard)."""

    def selector(self) -> Selector:
        """The selector; a clear refusal if none or both of "everything" and criteria."""
        try:
            return Selector(
                everything=self.everything == "yes",
                message_id=self.message_id or None,
                saga_id=self.saga_id or None,
                type=self.type or None,
                reason=self.error_reason or None,
            )
        except DlqError as e:
            raise Refused(str(e), status_code=400) from None

    def fields(self) -> dict[str, str]:
        """The selection, to carry into the confirmation form."""
        given = {
            "message_id": self.message_id,
            "saga_id": self.saga_id,
            "type": self.type,
            "error_reason": self.error_reason,
            "everything": self.everything,
        }
        return {k: v for k, v in given.items() if v}


Chosen = Annotated[Selection, Form()]


def _report_page(
    request: Request, viewer: Viewer, report: DlqReport, queue: str, **extra: Any
) -> Response:
    return page(
        request,
        "confirm.html" if report.dry_run else "report.html",
        viewer,
        queue=queue,
        report=report,
        status_code=200 if report.ok else 409,
        **extra,
    )


@router.post("/dead-letters/{queue}/replay")
async def replay_letters(
    request: Request, queue: str, form: Chosen, *, svc: Svc, viewer: Change
) -> Response:
    """Not confirmed: a dry run that lists what would be replayed, with a button to do
    it. Confirmed: the replay (as ``POST /dead-letters/{queue}/replay``), and its report."""
    try:
        report = await replay(
            svc.client.bus,
            queue,
            selector=form.selector(),
            dry_run=form.confirmed != "yes",
            target=form.to,
        )
    except DlqError as e:
        raise _refusal(e) from None
    return _report_page(request, viewer, report, queue, fields=form.fields(), to=form.to)


@router.post("/dead-letters/{queue}/discard")
async def discard_letters(
    request: Request, queue: str, form: Chosen, *, svc: Svc, viewer: Change
) -> Response:
    """Not confirmed: a dry run that lists what would be discarded, with a field for the
    reason. Confirmed: the discard, each message stored with the reason first."""
    doing = form.confirmed == "yes"
    reason = form.reason.strip()
    if doing and not reason:
        raise Refused(
            "a reason is required to discard dead letters (it is kept with them)",
            status_code=400,
        )
    try:
        report = await discard(
            svc.client.bus,
            queue,
            selector=form.selector(),
            reason=reason or "dry run",
            database=svc.db,
            actor="ui",
            dry_run=not doing,
        )
    except DlqError as e:
        raise _refusal(e) from None
    return _report_page(request, viewer, report, queue, fields=form.fields(), reason=reason)
