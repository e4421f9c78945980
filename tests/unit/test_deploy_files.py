"""The deploy files agree with the code: definitions are generated, compose parses."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from orchestrator.messaging.topology import Topology

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "generate_definitions", DEPLOY / "rabbitmq" / "generate_definitions.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def test_committed_definitions_match_the_topology_the_services_declare() -> None:
    """A stale definitions.json would make the services' declarations fail at start-up."""
    committed = json.loads((DEPLOY / "rabbitmq" / "definitions.json").read_text())
    assert committed == _generator().definitions(Topology(namespace="saga"))
    names = {q["name"] for q in committed["queues"]}
    assert "saga.payment.commands.dlq" in names
    assert "saga.orchestrator.replies.retry.5s" in names


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_compose_file_is_valid() -> None:
    """docker-compose parses and validates the file (no engine needed)."""
    done = subprocess.run(
        ["docker-compose", "-f", str(DEPLOY / "compose.yaml"), "config", "--services"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert set(done.stdout.split()) == {
        "rabbitmq",
        "mongo",
        "orchestrator",
        "inventory",
        "payment",
        "shipping",
        "readside",
        "api",
    }
