"""Declarative saga definitions: the steps, their commands, replies and compensations.

Pure data, no I/O. A definition is interpreted by :func:`orchestrator.saga.decide.decide`.
Everything a definition gets wrong is refused when it is built, with the step named.

Steps run in *stages*: one step, or a group of steps declared with :func:`parallel` whose
commands leave together; the next stage starts when every step of the stage succeeded.
Steps marked retriable (``retry=Retry(...)``) come after the *pivot*, the last step that
can be compensated: they are driven forward until they succeed and never compensated.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from contracts import Message

__all__ = [
    "DEFAULT_MAX_SENDS",
    "DEFAULT_STEP_TIMEOUT",
    "DefinitionError",
    "Retry",
    "SagaDefinition",
    "Step",
    "parallel",
    "routing_key",
]

Builder = Callable[[Any], Message]
"""Builds a command from the saga's start message."""

DEFAULT_STEP_TIMEOUT = 30.0
DEFAULT_MAX_SENDS = 3
NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class DefinitionError(ValueError):
    """A saga definition is malformed; the message names the saga and the step."""


def routing_key(msg: type[Message] | Message) -> str:
    """``inventory.reserve_stock.v1`` -> ``inventory.reserve_stock``: participant, then command."""
    return msg.TYPE.rsplit(".", 1)[0]


def _named(value: object) -> str:
    """A class by its name, anything else by its repr (for error messages)."""
    return value.__name__ if isinstance(value, type) else repr(value)


def _is_contract(cls: object) -> bool:
    return isinstance(cls, type) and issubclass(cls, Message) and bool(cls.TYPE)


@dataclass(frozen=True, kw_only=True)
class Retry:
    """How a retriable step is driven forward: its command is resent (same message id)
    each time its deadline passes, the wait growing by ``backoff`` per send up to
    ``max_interval`` seconds; after ``max_sends`` sends without a reply the saga is parked
    as ``completing_stuck`` for an operator, who can resume it with a fresh budget."""

    max_sends: int = 10
    backoff: float = 2.0
    max_interval: float = 300.0

    def __post_init__(self) -> None:
        if self.max_sends < 1:
            raise DefinitionError("Retry.max_sends must be at least 1")
        if self.backoff < 1:
            raise DefinitionError("Retry.backoff must be >= 1 (1 resends at a fixed interval)")
        if self.max_interval <= 0:
            raise DefinitionError("Retry.max_interval must be > 0 seconds")


@dataclass(frozen=True, kw_only=True)
class Step:
    """One step: a command to a participant, its outcomes, and how to undo it.

    ``success`` moves the saga on; ``failure`` is a business refusal that makes the saga
    compensate the steps done before this one. ``compensate`` builds the command that undoes
    the step and ``compensated`` is the reply confirming it. ``timeout`` is how long the
    orchestrator waits for a reply before it resends the command (up to ``max_sends`` sends
    in all) and then treats the step as failed; left unset, the deployment's defaults apply
    (``SAGA_STEP_TIMEOUT``, ``SAGA_STEP_MAX_SENDS``).

    ``group`` names the parallel group the step belongs to (set by :func:`parallel`).
    ``retry`` makes the step retriable: it has no compensation, its ``failure`` reply is
    optional, and a refusal parks the saga as ``completing_stuck`` (a refusal cannot be
    retried away and nothing after the pivot is undone: an operator decides).
    """

    name: str
    participant: str
    command: Builder
    command_type: type[Message]
    success: type[Message]
    failure: type[Message] | None = None
    compensate: Builder | None = None
    compensation_type: type[Message] | None = None
    compensated: type[Message] | None = None
    timeout: float | None = None
    max_sends: int | None = None
    group: str | None = None
    retry: Retry | None = None

    def __post_init__(self) -> None:
        where = f"step {self.name!r}"
        if not NAME.match(self.name):
            raise DefinitionError(f"{where}: a step name is lower_snake_case, e.g. 'book_hotel'")
        if not NAME.match(self.participant):
            raise DefinitionError(f"{where}: participant {self.participant!r} is not a name")
        self._check_types(where)
        for cls in (self.command_type, self.compensation_type):
            if cls is not None and not cls.TYPE.startswith(self.participant + "."):
                raise DefinitionError(
                    f"{where}: {cls.TYPE} is not a command of participant {self.participant!r}"
                )
        undo = {
            "compensate": self.compensate,
            "compensation_type": self.compensation_type,
            "compensated": self.compensated,
        }
        missing = [role for role, value in undo.items() if value is None]
        if 0 < len(missing) < len(undo):
            raise DefinitionError(
                f"{where}: compensate and compensated go together, with compensation_type: "
                f"a compensation needs all three (missing: {', '.join(missing)})"
            )
        if self.timeout is not None and self.timeout <= 0:
            raise DefinitionError(f"{where}: timeout must be > 0 seconds")
        if self.max_sends is not None and self.max_sends < 1:
            raise DefinitionError(f"{where}: max_sends must be at least 1")
        if self.group is not None and not NAME.match(self.group):
            raise DefinitionError(f"{where}: group {self.group!r} is not a lower_snake_case name")
        self._check_retry(where)
        replies = self.replies()
        if len({r.TYPE for r in replies}) != len(replies):
            raise DefinitionError(f"{where}: success, failure and compensated must differ")

    def _check_retry(self, where: str) -> None:
        if self.retry is None:
            if self.failure is None:
                raise DefinitionError(
                    f"{where}: a step that can be compensated needs its failure reply "
                    "(only a retriable step, retry=Retry(...), may leave it out)"
                )
            return
        if self.compensate is not None:
            raise DefinitionError(
                f"{where}: a retriable step is never compensated; drop its compensation "
                "or its retry"
            )
        if self.max_sends is not None:
            raise DefinitionError(
                f"{where}: a retriable step's budget is retry=Retry(max_sends=...), not max_sends"
            )

    def _check_types(self, where: str) -> None:
        for role in ("command_type", "success", "failure", "compensation_type", "compensated"):
            value = getattr(self, role)
            optional = role in ("failure", "compensation_type", "compensated")
            if (value is not None or not optional) and not _is_contract(value):
                raise DefinitionError(
                    f"{where}: {role} {_named(value)} is not a registered message class "
                    "(a contracts.Message subclass decorated with @message('area.name.v1'))"
                )

    @property
    def deadline_seconds(self) -> float:
        """Seconds to wait for a reply (the step's own, else the built-in default)."""
        return self.timeout if self.timeout is not None else DEFAULT_STEP_TIMEOUT

    @property
    def sends(self) -> int:
        """Sends of the command before the step is given up (a retriable step: before
        the saga is parked)."""
        if self.retry is not None:
            return self.retry.max_sends
        return self.max_sends if self.max_sends is not None else DEFAULT_MAX_SENDS

    @property
    def retriable(self) -> bool:
        """Driven forward until it succeeds, never compensated."""
        return self.retry is not None

    def wait_after(self, attempt: int) -> float:
        """Seconds to wait for a reply after send number ``attempt``: the step's deadline,
        growing by the retry backoff for a retriable step (capped at its max interval)."""
        base = self.deadline_seconds
        if self.retry is None or attempt <= 1:
            return base
        grown = base * self.retry.backoff ** min(attempt - 1, 64)
        return max(base, min(grown, self.retry.max_interval))

    def replies(self) -> tuple[type[Message], ...]:
        """Every reply this step can receive."""
        return tuple(r for r in (self.success, self.failure, self.compensated) if r is not None)

    def commands(self) -> tuple[type[Message], ...]:
        """Every command this step can send."""
        return (self.command_type, *((self.compensation_type,) if self.compensation_type else ()))


def parallel(group: str, *steps: Step) -> tuple[Step, ...]:
    """Steps that run at the same time: their commands are stored in one commit and leave
    together, and the saga moves on when every one of them succeeded. If one is refused,
    the others are compensated (those still waiting once they answer or time out), then
    the steps before the group. Use it inside ``steps``:
    ``steps=(*parallel("prepare", reserve, pay), ship)``."""
    if len(steps) < 2:
        raise DefinitionError(f"parallel group {group!r} needs at least two steps")
    return tuple(replace(step, group=group) for step in steps)


def _stages(where: str, steps: tuple[Step, ...]) -> tuple[tuple[Step, ...], ...]:
    """Consecutive steps of one group form a stage; any other step is a stage alone."""
    stages: list[list[Step]] = []
    seen: set[str] = set()
    for step in steps:
        if step.group is not None and stages and stages[-1][0].group == step.group:
            stages[-1].append(step)
            continue
        if step.group is not None:
            if step.group in seen:
                raise DefinitionError(
                    f"{where}: the steps of group {step.group!r} must be next to each other"
                )
            seen.add(step.group)
        stages.append([step])
    for stage in stages:
        if stage[0].group is not None and len(stage) < 2:
            raise DefinitionError(
                f"{where}: group {stage[0].group!r} has one step; a group runs two or more"
            )
        if len({s.retriable for s in stage}) > 1:
            raise DefinitionError(
                f"{where}: group {stage[0].group!r} mixes retriable and compensatable steps"
            )
    retriable = [s.retriable for s in steps]
    if True in retriable and False in retriable[retriable.index(True) :]:
        first = steps[retriable.index(True)].name
        raise DefinitionError(
            f"{where}: retriable step {first!r} comes before a step that can be compensated; "
            "retriable steps come last, after the pivot"
        )
    return tuple(tuple(stage) for stage in stages)


def _no_reference(_start: Any) -> str:
    return ""


@dataclass(frozen=True, kw_only=True)
class SagaDefinition:
    """A named, versioned sequence of steps started by one message type.

    ``reference`` picks the saga's business reference (an order id, a booking number)
    from the start message; it is stored with the saga, carried by its outcome and
    progress events and shown by every operator tool. ``version`` numbers changes of
    the steps: a saga runs to its end on the version it started with.

    ``steps`` run in order; steps of a :func:`parallel` group run at the same time.
    """

    name: str
    start: type[Message]
    steps: tuple[Step, ...]
    version: int = 1
    reference: Callable[[Any], str] = field(default=_no_reference)
    description: str = ""
    _by_name: Mapping[str, int] = field(init=False, repr=False, compare=False)
    _by_reply: Mapping[str, tuple[int, str]] = field(init=False, repr=False, compare=False)
    _stages: tuple[tuple[Step, ...], ...] = field(init=False, repr=False, compare=False)
    _stage_of: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = f"saga {self.name!r}"
        if not NAME.match(self.name):
            raise DefinitionError(f"{where}: a saga name is lower_snake_case, e.g. 'travel'")
        if not isinstance(self.version, int) or self.version < 1:
            raise DefinitionError(f"{where}: version must be a whole number >= 1")
        if not _is_contract(self.start):
            raise DefinitionError(
                f"{where}: start {_named(self.start)} is not a registered message class "
                "(a contracts.Message subclass decorated with @message('area.name.v1'))"
            )
        if not self.steps:
            raise DefinitionError(f"{where} has no steps")
        names = [s.name for s in self.steps]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise DefinitionError(f"{where} has duplicate step names: {', '.join(duplicates)}")
        participants = {s.participant for s in self.steps}
        area = self.start.TYPE.split(".", 1)[0]
        if area in participants:
            raise DefinitionError(
                f"{where}: the start command {self.start.TYPE} is routed like a command of "
                f"participant {area!r}; give it a type of its own area (e.g. 'bookings.')"
            )
        by_reply: dict[str, tuple[int, str]] = {}
        for i, step in enumerate(self.steps):
            outcomes = [(step.success, "success"), (step.failure, "failure")]
            outcomes.append((step.compensated, "compensated"))
            for cls, outcome in ((c, o) for c, o in outcomes if c is not None):
                if cls.TYPE in by_reply:
                    other = self.steps[by_reply[cls.TYPE][0]].name
                    raise DefinitionError(
                        f"{where}: reply {cls.TYPE} belongs to steps {other!r} and "
                        f"{step.name!r}; each reply type must identify one step"
                    )
                if cls is self.start:
                    raise DefinitionError(f"{where}: {cls.TYPE} is both the start and a reply")
                by_reply[cls.TYPE] = (i, outcome)
        stages = _stages(where, self.steps)
        object.__setattr__(self, "_by_name", {n: i for i, n in enumerate(names)})
        object.__setattr__(self, "_by_reply", by_reply)
        object.__setattr__(self, "_stages", stages)
        object.__setattr__(
            self, "_stage_of", {s.name: i for i, stage in enumerate(stages) for s in stage}
        )

    @property
    def key(self) -> str:
        """``name@vN``: how logs and errors name one version."""
        return f"{self.name}@v{self.version}"

    def step(self, name: str) -> Step:
        """The step called ``name``."""
        return self.steps[self._by_name[name]]

    def has_step(self, name: str) -> bool:
        """Whether a step is called ``name``."""
        return name in self._by_name

    def index(self, name: str) -> int:
        """Position of the step called ``name``."""
        return self._by_name[name]

    @property
    def stages(self) -> tuple[tuple[Step, ...], ...]:
        """The steps in the order they run: each stage is one step or a parallel group."""
        return self._stages

    def stage_index(self, name: str) -> int:
        """Position of the stage the step called ``name`` runs in."""
        return self._stage_of[name]

    def stage_of(self, name: str) -> tuple[Step, ...]:
        """The stage the step called ``name`` runs in (itself, or its whole group)."""
        return self._stages[self._stage_of[name]]

    @property
    def pivot(self) -> str | None:
        """The last step that can be compensated, when retriable steps follow it: once it
        succeeded the saga only moves forward. None if no step is retriable."""
        if not any(s.retriable for s in self.steps):
            return None
        before = [s.name for s in self.steps if not s.retriable]
        return before[-1] if before else None

    def step_replying(self, reply: Message) -> tuple[Step, str] | None:
        """The step a reply belongs to and what it says: success, failure or compensated."""
        found = self._by_reply.get(reply.TYPE)
        if found is None:
            return None
        return self.steps[found[0]], found[1]

    def participants(self) -> tuple[str, ...]:
        """The participants its steps talk to, in step order."""
        return tuple(dict.fromkeys(s.participant for s in self.steps))

    def load_start(self, data: Mapping[str, Any]) -> Message:
        """Rebuild the start message stored in the saga's first event."""
        return self.start.model_validate(data)

    def with_defaults(self, *, timeout: float, max_sends: int) -> SagaDefinition:
        """This definition with the deployment's step deadline and resend budget filled in
        wherever a step left them unset."""
        steps = tuple(
            replace(
                s,
                timeout=s.timeout if s.timeout is not None else timeout,
                max_sends=s.max_sends if s.max_sends is not None or s.retriable else max_sends,
            )
            for s in self.steps
        )
        return replace(self, steps=steps)
