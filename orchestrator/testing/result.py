"""One saga as the test kit saw it: its state, its stored history, what it sent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from contracts import SagaOutcome

if TYPE_CHECKING:
    from contracts import Message
    from orchestrator.saga.commits import Commit
    from orchestrator.saga.state import EventType, SagaState, Status
    from orchestrator.testing.bus import SentMessage

__all__ = ["DeadLetter", "SagaResult"]


@dataclass(frozen=True, kw_only=True)
class DeadLetter:
    """A message the runtime refused as bad input (in production: the dead-letter queue)."""

    saga_id: str
    message: Message
    message_id: str
    reason: str
    detail: str


@dataclass(frozen=True, kw_only=True)
class SagaResult:
    """A snapshot of one saga; ask the kit again (``await kit.saga(id)``) after time passes."""

    saga_id: str
    state: SagaState
    history: tuple[Commit, ...]
    sent: tuple[SentMessage, ...]
    dead_letters: tuple[DeadLetter, ...] = ()

    @property
    def status(self) -> Status | None:
        """``completed``, ``failed``, ``compensated``, ``compensation_failed``, ``running``
        or ``compensating`` (a ``StrEnum``: compare with the string); None if not started."""
        return self.state.status

    @property
    def reason(self) -> str | None:
        """Why the saga failed or was parked, if it did."""
        return self.state.parked_reason or self.state.reason

    @property
    def commands(self) -> list[str]:
        """Routing keys (``<participant>.<command>``) of every command sent, resends
        included, in the order they were sent."""
        return [m.routing_key for m in self.sent if m.kind == "command"]

    @property
    def command_messages(self) -> list[Message]:
        """The commands sent, as messages, in order."""
        return [m.message for m in self.sent if m.kind == "command"]

    @property
    def events(self) -> list[EventType]:
        """The stored saga events, in order (``EventType`` is a ``StrEnum``)."""
        return [e.type for c in self.history for e in c.events]

    @property
    def compensated(self) -> list[str]:
        """The steps compensated, in the order their compensations were confirmed."""
        return [
            e.step or "" for c in self.history for e in c.events if e.type == "step_compensated"
        ]

    @property
    def published(self) -> list[Message]:
        """Events published for the saga (outcome, progress), in order."""
        return [m.message for m in self.sent if m.kind == "event"]

    @property
    def outcome(self) -> SagaOutcome | None:
        """The outcome event (``SagaCompleted``, ``SagaFailed``, ``SagaCompensated``), if
        the saga ended."""
        ends = [m for m in self.published if isinstance(m, SagaOutcome)]
        return ends[-1] if ends else None

    def __str__(self) -> str:
        lines = [f"saga {self.saga_id}: {self.status} (reason: {self.reason})"]
        lines += [f"  sent {key}" for key in self.commands]
        lines += [f"  event {e}" for e in self.events]
        lines += [
            f"  dead letter {d.message.TYPE}: {d.reason} {d.detail}" for d in self.dead_letters
        ]
        return "\n".join(lines)
