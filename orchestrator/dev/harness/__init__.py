"""Failure-scenario tooling: invariant checks over a running system's stores, fault
rules for running participants, and the scenario catalogue with its runner."""

from orchestrator.dev.harness.catalogue import catalogue
from orchestrator.dev.harness.deployment import Deployment, HarnessEnv, harness_env
from orchestrator.dev.harness.faults_client import FaultsClient, FaultsNotApplied
from orchestrator.dev.harness.invariants import InvariantReport, check_invariants
from orchestrator.dev.harness.report import CatalogueReport, ScenarioReport
from orchestrator.dev.harness.runner import find_scenario, run_catalogue, run_scenario
from orchestrator.dev.harness.scenario import Run, Scenario

__all__ = [
    "CatalogueReport",
    "Deployment",
    "FaultsClient",
    "FaultsNotApplied",
    "HarnessEnv",
    "InvariantReport",
    "Run",
    "Scenario",
    "ScenarioReport",
    "catalogue",
    "check_invariants",
    "find_scenario",
    "harness_env",
    "run_catalogue",
    "run_scenario",
]
