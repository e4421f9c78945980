"""Declarative saga definitions: the steps, their commands, replies and compensations.

Pure data, no I/O. A definition is interpreted by :func:`orchestrator.decide.decide`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from contracts import Message

__all__ = ["SagaDefinition", "Step", "routing_key"]

Builder = Callable[[Any], Message]
"""Builds a command from the saga's start message."""


def routing_key(msg: type[Message] | Message) -> str:
    """``inventory.reserve_stock.v1`` -> ``inventory.reserve_stock``: participant, then command."""
    return msg.TYPE.rsplit(".", 1)[0]


@dataclass(frozen=True, kw_only=True)
class Step:
    """One step: a command to a participant, its outcomes, and how to undo it.

    ``success`` moves the saga on; ``failure`` is a business refusal that makes the saga
    compensate the steps done before this one. ``compensate`` builds the command that undoes
    the step and ``compensated`` is the reply confirming it. ``timeout`` is how long the
    orchestrator waits for a reply before it resends the command (up to ``max_sends`` sends
    in all) and then treats the step as failed.
    """

    name: str
    participant: str
    command: Builder
    command_type: type[Message]
    success: type[Message]
    failure: type[Message]
    compensate: Builder | None = None
    compensation_type: type[Message] | None = None
    compensated: type[Message] | None = None
    timeout: float = 30.0
    max_sends: int = 3

    def __post_init__(self) -> None:
        for cls in (self.command_type, self.compensation_type):
            if cls is not None and not cls.TYPE.startswith(self.participant + "."):
                raise ValueError(f"{cls.TYPE} is not a command of participant {self.participant!r}")
        if (self.compensate is None) != (self.compensated is None):
            raise ValueError(f"step {self.name!r}: compensate and compensated go together")
        if self.timeout <= 0 or self.max_sends < 1:
            raise ValueError(f"step {self.name!r}: timeout must be > 0 and max_sends >= 1")


@dataclass(frozen=True, kw_only=True)
class SagaDefinition:
    """A named sequence of steps started by one message type."""

    name: str
    start: type[Message]
    steps: tuple[Step, ...]
    reference: Callable[[Any], str] = field(default=lambda _msg: "")
    _by_name: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError(f"saga {self.name!r} has no steps")
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError(f"saga {self.name!r} has duplicate step names")
        object.__setattr__(self, "_by_name", {n: i for i, n in enumerate(names)})

    def step(self, name: str) -> Step:
        """The step called ``name``."""
        return self.steps[self._by_name[name]]

    def index(self, name: str) -> int:
        """Position of the step called ``name``."""
        return self._by_name[name]

    def step_replying(self, reply: Message) -> tuple[Step, str] | None:
        """The step a reply belongs to and what it says: success, failure or compensated."""
        for step in self.steps:
            if isinstance(reply, step.success):
                return step, "success"
            if isinstance(reply, step.failure):
                return step, "failure"
            if step.compensated is not None and isinstance(reply, step.compensated):
                return step, "compensated"
        return None

    def load_start(self, data: Mapping[str, Any]) -> Message:
        """Rebuild the start message stored in the saga's first event."""
        return self.start.model_validate(data)
