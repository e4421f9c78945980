"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

__all__ = [
    "DeadLetterFilter",
    "ErrorBody",
    "SagaView",
    "StuckSaga",
    "TimelineEvent",
    "errors",
]


class ErrorBody(BaseModel):
    """Every error but a validation error (422) has this body."""

    detail: str = Field(description="What went wrong, and what to do about it")


ERRORS = {
    400: "The body is not valid JSON",
    401: "No token, a wrong token, or no token configured for this (see the message)",
    404: "No such thing",
    409: "Conflicts with the current state (see the message); Retry-After if it passes",
    410: "The saga finished and retention removed its history (SAGA_RETENTION_DAYS)",
    413: "The body is larger than SAGA_MAX_BODY_BYTES",
    503: "The store or the broker does not answer; retry after Retry-After seconds",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for the error statuses a route can answer, with their body."""
    return {code: {"model": ErrorBody, "description": ERRORS[code]} for code in codes}


class TimelineEvent(BaseModel):
    """One stored event of a saga."""

    version: int
    type: str
    at: datetime
    step: str | None
    attempt: int
    error: str | None = None
    sent: list[str] = Field(default_factory=list, description="Messages this commit sent")


class SagaView(BaseModel):
    """A saga's state and, on request, its full timeline."""

    saga_id: str
    saga_name: str
    status: str | None
    step: str | None
    attempt: int
    version: int
    started_at: datetime | None
    updated_at: datetime | None
    deadline: datetime | None
    failed_step: str | None
    reason: str | None
    parked_reason: str | None
    data: dict[str, Any]
    timeline: list[TimelineEvent] = Field(default_factory=list)


class StuckSaga(BaseModel):
    """A saga that needs a look, and why; or a parked outbox or deadline of one (status
    ``outbox_parked`` or ``deadline_parked``, with its ``commit_id``), which only an
    operator moves on: ``saga outbox retry|drop <commit_id>``."""

    saga_id: str
    status: str
    step: str | None
    updated_at: datetime
    """When the saga last changed; for parked work, when it was parked."""
    reason: str
    commit_id: str | None = None
    """For parked work: the commit (``<saga id>:<version>``) to retry or drop."""


FilterText = Annotated[str, Field(min_length=1, max_length=500)]
FILTERS = ("message_id", "saga_id", "type", "error_reason")


def _something_selected(schema: dict[str, Any]) -> None:
    """The JSON schema says what the validator enforces: ``all`` or a filter."""
    schema["anyOf"] = [
        {"properties": {"all": {"const": True}}, "required": ["all"]},
        *({"required": [name]} for name in FILTERS),
    ]


class DeadLetterFilter(BaseModel):
    """Which dead letters an operation applies to: ``"all": true``, or one or more
    filters (all given must hold). With both, the filters narrow the selection."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_something_selected)

    all: StrictBool = Field(default=False, description="every message in the queue")
    message_id: FilterText | SkipJsonSchema[None] = None
    saga_id: FilterText | SkipJsonSchema[None] = Field(
        default=None, description="the saga's id (the message's correlation id)"
    )
    type: FilterText | SkipJsonSchema[None] = Field(
        default=None, description="the message type, e.g. payment.authorize_payment.v1"
    )
    error_reason: FilterText | SkipJsonSchema[None] = Field(
        default=None,
        description="why it was parked: x-error-reason (retries_exhausted, schema_violation, "
        "...), or broker:<reason> for messages the broker dead-lettered itself "
        "(broker:delivery_limit)",
    )

    @field_validator(*FILTERS, mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # Leaving a filter out is how to say "any"; an explicit null is refused, as the
        # schema says (a missing value never reaches a validator: defaults are not).
        if value is None:
            raise ValueError("leave the filter out instead of sending null")
        return value

    @model_validator(mode="after")
    def _selects_something(self) -> Self:
        if not self.all and not self.criteria():
            raise ValueError(
                'select the messages: "all": true, or one or more of ' + ", ".join(FILTERS)
            )
        return self

    def criteria(self) -> dict[str, str]:
        """The filters given."""
        given = {name: getattr(self, name) for name in FILTERS}
        return {k: v for k, v in given.items() if v is not None}
