"""What a scenario run found, for people (the CLI renders it) and for CI (JSON)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from orchestrator.dev.harness.invariants import CHECKS

__all__ = ["ALL_CHECKS", "CatalogueReport", "ScenarioReport"]

ALL_CHECKS = (*CHECKS, "expectations")
"""The invariants, then the scenario's own expectations (outcomes, evidence of the fault)."""


@dataclass(kw_only=True)
class ScenarioReport:
    """One scenario's result."""

    scenario: str
    summary: str
    sagas: int
    namespace: str = ""
    outcomes: dict[str, int] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    """Check name (:data:`ALL_CHECKS`) -> held."""
    violations: list[str] = field(default_factory=list)
    faults: dict[str, int] = field(default_factory=dict)
    """Faults injected: rule firings by action, and what the harness did (kills, ...)."""
    evidence: dict[str, int] = field(default_factory=dict)
    """What the sagas went through: resends, timeouts, late replies compensated, parked."""
    dead_letters: dict[str, dict[str, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    skipped: str | None = None
    logs: str = ""

    @property
    def ok(self) -> bool:
        """No violation (a skipped scenario has none)."""
        return not self.violations

    @property
    def status(self) -> str:
        """PASS, FAIL or SKIP."""
        if self.skipped:
            return "SKIP"
        return "PASS" if self.ok else "FAIL"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"status": self.status, "ok": self.ok, **asdict(self)}


@dataclass(kw_only=True)
class CatalogueReport:
    """Several scenarios run one after the other."""

    scenarios: list[ScenarioReport] = field(default_factory=list)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        """Every scenario passed or was skipped."""
        return all(r.ok for r in self.scenarios)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "ok": self.ok,
            "started_at": self.started_at.isoformat(),
            "duration_s": round(self.duration_s, 2),
            "passed": sum(r.status == "PASS" for r in self.scenarios),
            "failed": sum(r.status == "FAIL" for r in self.scenarios),
            "skipped": sum(r.status == "SKIP" for r in self.scenarios),
            "scenarios": [r.to_dict() for r in self.scenarios],
        }
