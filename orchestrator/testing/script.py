"""What a scripted participant does with a command: reply, refuse, stay silent, answer
late, or answer twice.

A script is a list of behaviours, one per send of the command to the same saga (the
orchestrator resends a command whose reply is overdue); the last one repeats. A command
nobody scripted gets :func:`reply`: the step's expected reply.

Replies are built from the command when the test does not say how: the reply's fields
are taken from the command's fields of the same name (``BookCar(trip_id=...)`` ->
``CarBooked(trip_id=...)``), plus ``reason`` for a refusal. When that is not enough, pass
the reply, or a function of the command that returns it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from pydantic import ValidationError

from contracts import Message

__all__ = [
    "Behaviour",
    "KitError",
    "ReplyBuilder",
    "ScriptError",
    "build_reply",
    "duplicate",
    "late",
    "no_reply",
    "refuse",
    "reply",
]

ReplyBuilder = Message | Callable[[Any], Message | None]
"""A reply, or a function of the command that returns one (None: no reply)."""

Expected = Literal["success", "failure", "compensated"]


class KitError(Exception):
    """The test kit was used wrongly, or the saga did something the kit cannot follow."""


class ScriptError(KitError):
    """A scripted participant cannot answer as told; the message says how to script it."""


@dataclass(frozen=True, kw_only=True)
class Behaviour:
    """What the participant does with one send of a command. Build with :func:`reply`,
    :func:`refuse`, :func:`no_reply`, :func:`late` or :func:`duplicate`."""

    answer: ReplyBuilder | None = None
    """The reply (or how to build it); None builds the step's expected reply."""
    silent: bool = False
    """No reply at all: the saga's deadline has to fire."""
    refusal: bool = False
    """The reply must be the step's business refusal."""
    reason: str = "refused"
    after: float = 0.0
    """Seconds (of the kit's clock) before the reply reaches the orchestrator."""
    copies: int = 1
    """How often the reply is delivered (the broker may deliver it more than once)."""

    def reply_to(self, command: Message, expected: type[Message], role: Expected) -> Message | None:
        """The reply to ``command``; ``expected`` is the reply type the step names for
        ``role`` (success, failure or compensated)."""
        if self.silent:
            return None
        answer = self.answer
        if answer is None:
            extra = {"reason": self.reason} if role == "failure" else {}
            return build_reply(expected, command, **extra)
        found = answer if isinstance(answer, Message) else answer(command)
        if found is not None and not isinstance(found, Message):
            raise ScriptError(
                f"the script for {command.TYPE} returned {type(found).__name__}, not a message"
            )
        if self.refusal and found is not None and type(found) is not expected:
            raise ScriptError(
                f"refuse(...) for {command.TYPE} replied {found.TYPE}; "
                f"the step's refusal is {expected.TYPE}"
            )
        return found


def build_reply(cls: type[Message], command: Message, **extra: Any) -> Message:
    """``cls`` filled from the command's fields of the same names (and ``extra``)."""
    fields = command.model_dump()
    data = {k: v for k, v in fields.items() if k in cls.model_fields}
    data |= {k: v for k, v in extra.items() if k in cls.model_fields}
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        bad = sorted({str(err["loc"][0]) for err in e.errors() if err["loc"]})
        raise ScriptError(
            f"cannot build {cls.TYPE} from {command.TYPE} "
            f"(missing or invalid: {', '.join(bad)}); "
            f"script it, e.g. kit.script({type(command).__name__}, "
            f"reply(lambda c: {cls.__name__}(...)))"
        ) from e


def reply(answer: ReplyBuilder | None = None) -> Behaviour:
    """Reply at once: with ``answer`` (a reply, or a function of the command), or else with
    the step's expected reply (success for a step's command, compensated for its
    compensation), built from the command's fields."""
    return Behaviour(answer=answer)


def refuse(reason: str = "refused", *, answer: ReplyBuilder | None = None) -> Behaviour:
    """A business refusal: the step's failure reply with ``reason`` (or ``answer``). The
    saga compensates the steps done before this one."""
    return Behaviour(answer=answer, refusal=True, reason=reason)


def no_reply() -> Behaviour:
    """Never answer this send: the step's deadline fires when the kit's clock passes it
    (``kit.advance(...)``), and the command is resent or the step given up."""
    return Behaviour(silent=True)


def late(behaviour: Behaviour | None = None, *, after: float) -> Behaviour:
    """Answer (as ``behaviour`` says; default :func:`reply`) ``after`` seconds later, e.g.
    after the step's deadline. The reply arrives when the kit's clock gets there."""
    if after <= 0:
        raise ScriptError("late(..., after=) needs a delay > 0 seconds")
    base = behaviour or reply()
    if base.silent:
        raise ScriptError("late(no_reply()) never answers: use no_reply()")
    return replace(base, after=after)


def duplicate(behaviour: Behaviour | None = None, *, copies: int = 2) -> Behaviour:
    """Deliver the reply (as ``behaviour`` says; default :func:`reply`) ``copies`` times
    with the same message id, as a broker redelivery would."""
    if copies < 2:
        raise ScriptError("duplicate(..., copies=) needs at least 2 copies")
    base = behaviour or reply()
    if base.silent:
        raise ScriptError("duplicate(no_reply()) never answers: use no_reply()")
    return replace(base, copies=copies)
