"""The deploy files agree with the code: definitions are generated, compose parses."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from orchestrator.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SERVICES = {"orchestrator", "inventory", "payment", "shipping", "returns", "readside", "api"}


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
    production = Settings(namespace="saga", retry_queue_type="quorum")
    assert committed == _generator().definitions(production.topology())
    names = {q["name"] for q in committed["queues"]}
    assert "saga.payment.commands.dlq" in names
    assert "saga.orchestrator.order_fulfilment.replies.retry.5s" in names


def _compose(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = ["docker-compose", "-f", str(DEPLOY / "compose.yaml"), "config", *args]
    return subprocess.run(command, capture_output=True, text=True, check=False, env=env)


SECRETS = {"RABBITMQ_ADMIN_PASSWORD": "a-broker-password", "SAGA_OPERATOR_TOKEN": "a-long-token"}


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_compose_file_is_valid_and_has_no_default_secret() -> None:
    """docker-compose parses and validates the file (no engine needed), and refuses it
    while the broker password or the operator token is unset: neither has a default."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SAGA_", "RABBITMQ_", "LOW_STOCK_"))
    }
    for missing in SECRETS:
        refused = _compose({**env, **SECRETS, missing: ""}, "--services")
        assert refused.returncode != 0
        assert missing in refused.stderr
    done = _compose({**env, **SECRETS}, "--services")
    assert done.returncode == 0, done.stderr
    assert set(done.stdout.split()) == {
        "rabbitmq",
        "mongo1",
        "mongo2",
        "mongo3",
        "mongo-init",
        "topology",
        *SERVICES,
    }


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_compose_services_are_health_checked_on_a_majority_replica_set() -> None:
    """Every long-running service has a healthcheck (the saga services ask their /ready
    with Python: the image has no curl); the services start after the replica set is
    initiated and the topology declared, and write with w=majority."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAGA_", "RABBITMQ_"))}
    done = _compose({**env, **SECRETS})
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    one_shot = {"mongo-init", "topology"}
    for name, service in services.items():
        if name in one_shot:
            assert service["restart"] == "no"
            continue
        assert service["healthcheck"]["test"][0] == "CMD", name
    for name in SERVICES:
        service = services[name]
        port = "8000" if name == "api" else "9100"
        check = " ".join(service["healthcheck"]["test"])
        assert "python" in check
        assert f"127.0.0.1:{port}/ready" in check, name
        assert service["depends_on"]["mongo-init"]["condition"] == "service_completed_successfully"
        assert service["depends_on"]["topology"]["condition"] == "service_completed_successfully"
        environment = service["environment"]
        url = environment["MONGODB_URL"]
        assert "mongo1:27017,mongo2:27017,mongo3:27017" in url
        assert "replicaSet=rs0" in url
        assert "w=majority" in url
        assert environment["SAGA_DECLARE_TOPOLOGY"] == "false"
    assert services["topology"]["command"] == ["saga", "topology", "apply"]
    for member in ("mongo1", "mongo2", "mongo3"):
        assert services[member]["command"][:2] == ["--replSet", "rs0"]
