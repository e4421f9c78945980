"""Failure-scenario tooling: invariant checks over a running system's stores."""

from orchestrator.harness.invariants import InvariantReport, check_invariants

__all__ = ["InvariantReport", "check_invariants"]
