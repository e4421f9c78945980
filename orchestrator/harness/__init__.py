"""Failure-scenario tooling: invariant checks over a running system's stores, fault
rules for running participants, and the scenario catalogue with its runner."""

from orchestrator.harness.deployment import Deployment, HarnessEnv, harness_env
from orchestrator.harness.faults_client import FaultsClient, FaultsNotApplied
from orchestrator.harness.invariants import InvariantReport, check_invariants
from orchestrator.harness.report import CatalogueReport, ScenarioReport
from orchestrator.harness.runner import find_scenario, run_catalogue, run_scenario
from orchestrator.harness.scenario import Run, Scenario
from orchestrator.harness.scenarios import CATALOGUE

__all__ = [
    "CATALOGUE",
    "CatalogueReport",
    "Deployment",
    "FaultsClient",
    "FaultsNotApplied",
    "HarnessEnv",
    "InvariantReport",
    "Run",
    "Scenario",
    "ScenarioReport",
    "check_invariants",
    "find_scenario",
    "harness_env",
    "run_catalogue",
    "run_scenario",
]
