"""The scenario catalogue: every registered pack's scenarios."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Iterable

    from orchestrator.dev.harness.scenario import Scenario
    from orchestrator.packs import SagaPack

__all__ = ["catalogue"]


def catalogue(packs: Iterable[SagaPack] | None = None) -> tuple[Scenario, ...]:
    """The scenarios of ``packs`` (default: those ``SAGA_DEFINITIONS`` registers), in
    registration order; a name used twice is an error."""
    found: list[Scenario] = []
    for pack in Settings.from_env().packs() if packs is None else packs:
        found += pack.part("scenarios") or ()
    names = [s.name for s in found]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"scenario names used by two packs: {', '.join(twice)}")
    return tuple(found)
