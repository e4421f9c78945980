"""The invariants of DESIGN.md, checked against the stores of a running system.

Generic, for every saga, driven by the registered definitions (see
:mod:`orchestrator.dev.harness.history_checks`):

* ``sagas``: every saga is terminal, or parked (compensation_failed) with a reason, and
  runs a registered definition;
* ``compensation_order``: what was done is undone in reverse order of completion;
* ``no_command_after_end``: no command is sent after the saga ended, except the
  compensation of a late success;
* ``steps_answered``: no step is left without its reply or a deadline;
* ``dead_letters`` (when given): each dead-letter queue holds exactly the messages the
  scenario expects, counted by ``x-error-reason``.

Then each registered pack's own ``invariants`` part adds what its domain promises (the
order pack: stock conserved, payments captured only when completed). Each violation
belongs to a named check, so a report says which invariant failed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.dev.harness.history_checks import (
    compensation_order,
    no_command_after_end,
    steps_answered,
)
from orchestrator.packs import registry_of
from orchestrator.saga.state import Status, replay
from orchestrator.settings import Settings
from orchestrator.store.mongo import MongoSagaStore

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

    from orchestrator.packs import SagaPack
    from orchestrator.saga.registry import SagaRegistry
    from orchestrator.saga.state import SagaState

__all__ = [
    "CHECKS",
    "GENERIC_CHECKS",
    "DeadLetterCounts",
    "InvariantReport",
    "check_invariants",
    "compare_dead_letters",
]

GENERIC_CHECKS = (
    "sagas",
    "compensation_order",
    "no_command_after_end",
    "steps_answered",
    "dead_letters",
)
"""The invariants every saga keeps, by name."""
CHECKS = (*GENERIC_CHECKS, "stock", "payments", "refunds", "returned_stock")
"""Every invariant a report lists: the generic ones, then the shipped packs' (the order
pack: stock conserved, payments settled; the return pack: refunds within the capture,
returned goods accounted for). A check of another pack is listed once it fails."""

DeadLetterCounts = Mapping[str, Mapping[str, int]]
"""Work queue (without namespace, e.g. ``payment.commands``) -> error reason -> messages."""


@dataclass
class InvariantReport:
    """What the check found: violations (empty if all hold) and saga outcomes."""

    violations: list[str] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    parked: dict[str, str] = field(default_factory=dict)
    failures: Counter[str] = field(default_factory=Counter)
    """Violations per check of :data:`CHECKS` (absent: it held)."""

    @property
    def ok(self) -> bool:
        """All invariants hold."""
        return not self.violations

    def add(self, check: str, violation: str) -> None:
        """Record a violation of ``check``."""
        self.failures[check] += 1
        self.violations.append(violation)

    def passed(self, check: str) -> bool:
        """Whether ``check`` held."""
        return not self.failures[check]

    def names(self) -> tuple[str, ...]:
        """The checks to list: :data:`CHECKS`, then any other that failed."""
        return (*CHECKS, *(c for c in self.failures if c not in CHECKS))

    def __str__(self) -> str:
        head = ", ".join(f"{k}={v}" for k, v in sorted(self.outcomes.items()))
        if self.ok:
            return f"invariants hold ({head})"
        return f"{len(self.violations)} violations ({head}):\n  " + "\n  ".join(
            self.violations[:20]
        )


async def check_invariants(
    db: AsyncDatabase[dict[str, Any]],
    *,
    saga_ids: Iterable[str],
    facts: Mapping[str, Any] | None = None,
    initial_stock: Mapping[str, int] | None = None,
    dead_letters: DeadLetterCounts | None = None,
    expected_dead_letters: DeadLetterCounts | None = None,
    all_sagas: bool = False,
    packs: Iterable[SagaPack] | None = None,
) -> InvariantReport:
    """Check every invariant for these sagas; never raises on a violation.

    ``facts`` is what packs' checks need of the setup (``initial_stock`` for the order
    pack; given alone, ``initial_stock`` is put there). Dead letters are checked when
    ``dead_letters`` (what the queues hold) is given: they must equal
    ``expected_dead_letters`` (default: none anywhere). With ``all_sagas``, ``saga_ids``
    are all the sagas of the database, so packs can check for strays too. ``packs``
    defaults to the ones ``SAGA_DEFINITIONS`` registers.
    """
    report = InvariantReport()
    saga_ids = list(saga_ids)
    known = dict(facts or {})
    if initial_stock is not None:
        known.setdefault("initial_stock", initial_stock)
    if dead_letters is not None:
        for violation in compare_dead_letters(dead_letters, expected_dead_letters or {}):
            report.add("dead_letters", violation)
    packs = Settings.from_env().packs() if packs is None else tuple(packs)
    states = await _check_sagas(db, saga_ids, registry_of(packs), report)
    for pack in packs:
        check = pack.part("invariants")
        if check is not None:
            await check(db, states=states, report=report, facts=known, all_sagas=all_sagas)
    return report


def compare_dead_letters(found: DeadLetterCounts, expected: DeadLetterCounts) -> list[str]:
    """Differences between what dead-letter queues hold and what was expected."""
    problems = []
    for queue in sorted(set(found) | set(expected)):
        have = {r: n for r, n in (found.get(queue) or {}).items() if n}
        want = {r: n for r, n in (expected.get(queue) or {}).items() if n}
        if have != want:
            problems.append(f"dead letters of {queue}: {_counts(have)}, expected {_counts(want)}")
    return problems


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{r}={n}" for r, n in sorted(counts.items())) or "none"


async def _check_sagas(
    db: AsyncDatabase[dict[str, Any]],
    saga_ids: Iterable[str],
    registry: SagaRegistry,
    report: InvariantReport,
) -> dict[str, SagaState]:
    """Every saga settled, a parked one with its reason, and its history as its
    definition says; the states, for packs' checks."""
    store = MongoSagaStore(database=db)
    states: dict[str, SagaState] = {}
    for saga_id in saga_ids:
        commits = await store.history(saga_id)
        state = replay(saga_id, ((c.version, c.causation_id, c.events) for c in commits))
        states[saga_id] = state
        status = state.status.value if state.status else "unknown"
        report.outcomes[status] += 1
        _check_settled(state, report)
        for violation in steps_answered(state, commits):
            report.add("steps_answered", violation)
        if not state.started:
            continue
        if not registry.knows(state.saga_name, state.saga_version):
            report.add(
                "sagas", f"saga {saga_id} runs unregistered {state.saga_name}@v{state.saga_version}"
            )
            continue
        definition = registry.get(state.saga_name, state.saga_version)
        for violation in compensation_order(definition, commits):
            report.add("compensation_order", violation)
        for violation in no_command_after_end(definition, commits):
            report.add("no_command_after_end", violation)
    return states


def _check_settled(state: SagaState, report: InvariantReport) -> None:
    status = state.status.value if state.status else "unknown"
    if state.status is None or not state.status.settled:
        report.add("sagas", f"saga {state.saga_id} not settled: {status} at {state.step}")
        return
    if state.status is Status.COMPENSATION_FAILED:
        report.parked[state.saga_id] = state.parked_reason or ""
        if not state.parked_reason:
            report.add("sagas", f"saga {state.saga_id} parked without a reason")
