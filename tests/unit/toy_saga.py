"""Toy sagas for the core's unit tests: a step before a parallel group, the group (2 or 3
steps), the pivot, then retriable steps. Every step has its own participant and
contracts (``<step>.do_<step>.v1`` -> ``<step>.<step>_done.v1`` / ``_refused`` /
``undo_<step>`` -> ``<step>_undone``), generated once here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import create_model

from contracts import Message, message
from orchestrator.saga.definition import Retry, SagaDefinition, Step, parallel

__all__ = [
    "TOY_START",
    "Toy",
    "ToyContracts",
    "contracts",
    "start",
    "toy_saga",
]

TIMEOUT = 10.0
MAX_SENDS = 2
RETRY = Retry(max_sends=4, backoff=2.0, max_interval=60.0)
STEP_NAMES = ("prep", "left", "middle", "right", "finish", "settle", "notify", "extra")


@message("toys.begin.v1")
class ToyBegin(Message):
    """Starts a toy saga."""

    ref: str


TOY_START = ToyBegin


def _contract(type_name: str, **fields: Any) -> type[Message]:
    cls = create_model(type_name.replace(".", "_"), __base__=Message, **fields)
    return message(type_name)(cls)


@dataclass(frozen=True)
class ToyContracts:
    """The five messages of one toy step."""

    do: type[Message]
    done: type[Message]
    refused: type[Message]
    undo: type[Message]
    undone: type[Message]


def _make(name: str) -> ToyContracts:
    ref = (str, ...)
    return ToyContracts(
        do=_contract(f"{name}.do_{name}.v1", ref=ref),
        done=_contract(f"{name}.{name}_done.v1", ref=ref),
        refused=_contract(f"{name}.{name}_refused.v1", ref=ref, reason=(str, "refused")),
        undo=_contract(f"{name}.undo_{name}.v1", ref=ref),
        undone=_contract(f"{name}.{name}_undone.v1", ref=ref),
    )


_CONTRACTS = {name: _make(name) for name in STEP_NAMES}


def contracts(step: str) -> ToyContracts:
    """The messages of toy step ``step``."""
    return _CONTRACTS[step]


def start(ref: str = "toy-1") -> Message:
    """The toy start message."""
    return ToyBegin(ref=ref)


def step(name: str, *, retriable: bool = False, refusable: bool = True) -> Step:
    """A toy step: compensatable, or retriable (with or without a refusal reply)."""
    c = contracts(name)
    if retriable:
        return Step(
            name=name,
            participant=name,
            command=lambda s, do=c.do: do(ref=s.ref),
            command_type=c.do,
            success=c.done,
            failure=c.refused if refusable else None,
            timeout=TIMEOUT,
            retry=RETRY,
        )
    return Step(
        name=name,
        participant=name,
        command=lambda s, do=c.do: do(ref=s.ref),
        command_type=c.do,
        success=c.done,
        failure=c.refused,
        compensate=lambda s, undo=c.undo: undo(ref=s.ref),
        compensation_type=c.undo,
        compensated=c.undone,
        timeout=TIMEOUT,
        max_sends=MAX_SENDS,
    )


@dataclass(frozen=True)
class Toy:
    """Replies of a toy step, for the tests."""

    name: str

    def done(self, ref: str = "toy-1") -> Message:
        return contracts(self.name).done(ref=ref)  # type: ignore[call-arg]

    def refused(self, reason: str = "no", ref: str = "toy-1") -> Message:
        return contracts(self.name).refused(ref=ref, reason=reason)  # type: ignore[call-arg]

    def undone(self, ref: str = "toy-1") -> Message:
        return contracts(self.name).undone(ref=ref)  # type: ignore[call-arg]


GROUPS = {2: ("left", "right"), 3: ("left", "middle", "right")}


def toy_saga(
    group: int = 2,
    *,
    retriable: tuple[str, ...] = ("settle",),
    retriable_group: bool = False,
    version: int = 1,
) -> SagaDefinition:
    """prep -> parallel(group members) -> finish (the pivot) -> retriable steps."""
    members = tuple(step(n) for n in GROUPS[group])
    tail = tuple(step(n, retriable=True) for n in retriable)
    if retriable_group and len(tail) >= 2:
        tail = parallel("wrap_up", *tail)
    return SagaDefinition(
        name="toy",
        start=ToyBegin,
        steps=(step("prep"), *parallel("together", *members), step("finish"), *tail),
        version=version,
        reference=lambda s: s.ref,
    )
