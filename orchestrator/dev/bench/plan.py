"""What the raw-broker baseline sends, derived from the saga under test.

"The same messages as the saga under test: two per step plus the start and the outcome":
the start (published by the driver), then stage by stage each step's command and its
reply, then the outcome event. A parallel group's commands leave together and the next
stage waits for all their replies, as in the system. The routing keys are the system's
(``<participant>.<command>``, replies keyed by the saga's name, ``<saga>.completed``)
and the bodies are the system's own: the start command of the workload, each step's
command built by the definition from it, and a success reply filled from the command's
fields. Written to a JSON file that the baseline's role processes read.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from contracts import SagaCompleted, encode
from orchestrator.saga.decide import outcome_key
from orchestrator.saga.definition import routing_key

if TYPE_CHECKING:
    from pathlib import Path

    from contracts import Message
    from orchestrator.saga.definition import SagaDefinition, Step

__all__ = ["BaselinePlan", "PlannedStep", "baseline_plan", "representative_reply"]


@dataclass(frozen=True, kw_only=True)
class PlannedStep:
    """One step's command and reply as the baseline sends them."""

    name: str
    participant: str
    routing_key: str
    command_type: str
    command_body: str
    reply_type: str
    reply_body: str


@dataclass(frozen=True, kw_only=True)
class BaselinePlan:
    """Every message of one saga, stage by stage."""

    saga: str
    start_key: str
    start_type: str
    reply_key: str
    outcome_key: str
    outcome_type: str
    outcome_body: str
    stages: tuple[tuple[PlannedStep, ...], ...]

    @property
    def participants(self) -> tuple[str, ...]:
        """The participant roles, in step order."""
        return tuple(dict.fromkeys(s.participant for stage in self.stages for s in stage))

    @property
    def steps(self) -> int:
        """Steps per saga."""
        return sum(len(stage) for stage in self.stages)

    @property
    def messages_per_saga(self) -> int:
        """Start, a command and a reply per step, outcome."""
        return 2 + 2 * self.steps

    def step_for(self, command_type: str) -> PlannedStep:
        """The step whose command has this type."""
        for stage in self.stages:
            for step in stage:
                if step.command_type == command_type:
                    return step
        raise KeyError(f"no step of {self.saga} sends {command_type}")

    def write(self, path: Path) -> None:
        """Store as JSON (for the role processes)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def read(cls, path: Path) -> BaselinePlan:
        """Read what :meth:`write` stored."""
        data = json.loads(path.read_text())
        stages = tuple(tuple(PlannedStep(**s) for s in stage) for stage in data.pop("stages"))
        return cls(**data, stages=stages)


def baseline_plan(definition: SagaDefinition, start: Message) -> BaselinePlan:
    """The baseline of ``definition`` for sagas started like ``start``."""
    if not isinstance(start, definition.start):
        raise TypeError(f"{definition.key} starts with {definition.start.TYPE}, not {start.TYPE}")
    outcome = SagaCompleted(
        saga_name=definition.name,
        reference=definition.reference(start),
        saga_version=definition.version,
        steps=tuple(s.name for s in definition.steps),
    )
    return BaselinePlan(
        saga=definition.name,
        start_key=routing_key(definition.start),
        start_type=definition.start.TYPE,
        reply_key=definition.name,
        outcome_key=outcome_key(definition.name, "completed"),
        outcome_type=outcome.TYPE,
        outcome_body=encode(outcome).decode(),
        stages=tuple(tuple(_planned(step, start) for step in stage) for stage in definition.stages),
    )


def _planned(step: Step, start: Message) -> PlannedStep:
    command = step.command(start)
    reply = representative_reply(step.success, command, start)
    return PlannedStep(
        name=step.name,
        participant=step.participant,
        routing_key=routing_key(command),
        command_type=command.TYPE,
        command_body=encode(command).decode(),
        reply_type=step.success.TYPE,
        reply_body=reply,
    )


def representative_reply(reply: type[Message], command: Message, start: Message) -> str:
    """A success reply's body, its fields taken from the command (then the start) where
    they share a name, placeholders for the rest; as a participant would answer."""
    known = {**start.model_dump(mode="json"), **command.model_dump(mode="json")}
    data: dict[str, Any] = {}
    for name, field in reply.model_fields.items():
        if name in known:
            data[name] = known[name]
        elif field.is_required():
            data[name] = _placeholder(field.annotation)
    try:
        return encode(reply.model_validate(data)).decode()
    except ValidationError:  # a constrained field: the body's size is what matters here
        return json.dumps(data, separators=(",", ":"))


def _placeholder(annotation: Any) -> Any:
    """A plausible value of a field's type (ids and names are strings of ~20 characters)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return _placeholder(typing.get_args(annotation)[0])
    if annotation is bool:
        return False
    if annotation is int:
        return 1
    if annotation is float:
        return 1.0
    return "bench-placeholder-0001"
