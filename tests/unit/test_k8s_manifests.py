"""The Kubernetes manifests (deploy/k8s) are valid and production-shaped, checked offline.

kustomize may not be installed, so a small renderer here builds the base and the example
overlay with the few kustomize features they use (resources, namespace, labels, images,
replicas, strategic-merge patches); where ``kubectl`` is installed, a test checks that it
renders the same. Every rendered document is validated against the Kubernetes schema
with ``kubernetes_validate``, and the rules an operator relies on are asserted: probes,
requests and limits, a disruption budget per Deployment, secrets only by reference.
"""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
OVERLAY = K8S / "overlays" / "example"
KUBERNETES_VERSION = "1.30"
SECRET = "saga-secrets"
SERVICES = {"orchestrator", "inventory", "payment", "shipping", "returns", "readside", "api"}
CLUSTER_SCOPED = {"Namespace"}

Doc = dict[str, Any]


def _load(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _merge(base: Any, patch: Any) -> Any:
    """Strategic merge as kustomize does it for these files: maps merge key by key, lists
    of named maps (containers, env, ports) merge by name, other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = _merge(base[key], value) if key in base else value
        return merged
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(x, dict) and "name" in x for x in base + patch)
    ):
        by_name = {x["name"]: x for x in base}
        out = [_merge(x, next((p for p in patch if p["name"] == x["name"]), {})) for x in base]
        return out + [p for p in patch if p["name"] not in by_name]
    return patch


def _find(docs: list[Doc], kind: str, name: str) -> int:
    hits = [i for i, d in enumerate(docs) if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(hits) == 1, f"the patch or replica count targets {kind}/{name}, found {len(hits)}"
    return hits[0]


def _set_image(doc: Doc, images: list[Doc]) -> None:
    for container in _containers(doc):
        name, _, _tag = container["image"].partition(":")
        for image in images:
            if image["name"] == name:
                tag = image.get("newTag", _tag)
                container["image"] = f"{image.get('newName', name)}:{tag}"


def render(folder: Path) -> list[Doc]:
    """The documents ``kubectl kustomize folder`` prints, for the features used here."""
    k = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(k) - {
        "apiVersion",
        "kind",
        "namespace",
        "labels",
        "resources",
        "images",
        "replicas",
        "patches",
    }
    assert not unknown, f"{folder}: the test's renderer does not know {unknown}"
    docs: list[Doc] = []
    for resource in k.get("resources", []):
        path = (folder / resource).resolve()
        docs += render(path) if path.is_dir() else _load(path)
    for patch in k.get("patches", []):
        assert set(patch) == {"path"}, "only strategic-merge patch files are rendered here"
        for p in _load(folder / patch["path"]):
            i = _find(docs, p["kind"], p["metadata"]["name"])
            docs[i] = _merge(docs[i], p)
    for r in k.get("replicas", []):
        docs[_find(docs, "Deployment", r["name"])]["spec"]["replicas"] = r["count"]
    for doc in docs:
        _set_image(doc, k.get("images", []))
        if "namespace" in k and doc["kind"] not in CLUSTER_SCOPED:
            doc["metadata"]["namespace"] = k["namespace"]
        for label in k.get("labels", []):
            assert label.get("includeSelectors") is False, "selectors are immutable: keep them"
            doc["metadata"]["labels"] = {**doc["metadata"].get("labels", {}), **label["pairs"]}
    return docs


def _pod_spec(doc: Doc) -> Doc | None:
    if doc["kind"] in ("Deployment", "Job"):
        spec: Doc = doc["spec"]["template"]["spec"]
        return spec
    return None


def _containers(doc: Doc) -> list[Doc]:
    spec = _pod_spec(doc)
    return [] if spec is None else [*spec.get("initContainers", []), *spec["containers"]]


def _of(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.fixture(scope="module", params=["base", "overlay"])
def docs(request: pytest.FixtureRequest) -> list[Doc]:
    return render(BASE if request.param == "base" else OVERLAY)


def test_every_document_is_valid_against_the_kubernetes_schema(docs: list[Doc]) -> None:
    """Strict validation: a misspelt or misplaced field fails, not only a wrong type."""
    errors = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(p) for p in e.path)
            errors.append(f"{doc['kind']}/{doc['metadata']['name']} {where}: {e.message}")
    assert not errors, "\n".join(errors)


def test_a_broken_manifest_is_refused_by_the_validator() -> None:
    """The validation above can fail: a typo in a probe is caught."""
    deployment = _of(render(BASE), "Deployment")["orchestrator"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["httpGet"]["paht"] = "/ready"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_every_service_has_a_deployment_and_the_topology_job_runs_apply(docs: list[Doc]) -> None:
    """One Deployment per service, each running its own console script of the image."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    deployments = _of(docs, "Deployment")
    assert set(deployments) == SERVICES
    for name, deployment in deployments.items():
        (container,) = _containers(deployment)
        assert container["command"] == [f"saga-{name}"]
        assert container["command"][0] in scripts
    (job,) = _of(docs, "Job").values()
    assert job["metadata"]["name"] == "saga-topology"
    (container,) = _containers(job)
    assert container["command"] == ["saga", "topology", "apply"]
    assert "saga" in scripts


def test_every_deployment_has_probes_on_its_health_port_and_bounded_resources(
    docs: list[Doc],
) -> None:
    """Liveness on /health, readiness on /ready, on a declared port (8000 for the API, the
    health port 9100 for the others); CPU and memory requested and limited."""
    for name, deployment in _of(docs, "Deployment").items():
        (container,) = _containers(deployment)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
            get = container[probe]["httpGet"]
            assert get["path"] == path, (name, probe)
            assert ports[get["port"]] == (8000 if name == "api" else 9100), (name, probe)
        for bound in ("requests", "limits"):
            assert set(container["resources"][bound]) >= {"cpu", "memory"}, (name, bound)
    for job in _of(docs, "Job").values():
        for container in _containers(job):
            assert set(container["resources"]) == {"requests", "limits"}


def test_every_deployment_has_a_disruption_budget_selecting_its_pods(docs: list[Doc]) -> None:
    budgets = _of(docs, "PodDisruptionBudget")
    for name, deployment in _of(docs, "Deployment").items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        selector = budgets[name]["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items(), name
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_the_api_service_reaches_the_api_pods(docs: list[Doc]) -> None:
    (service,) = _of(docs, "Service").values()
    api = _of(docs, "Deployment")["api"]
    assert (
        service["spec"]["selector"].items() <= api["spec"]["template"]["metadata"]["labels"].items()
    )
    (container,) = _containers(api)
    assert service["spec"]["ports"][0]["targetPort"] in {p["name"] for p in container["ports"]}


def _is_secret_name(name: str) -> bool:
    return name.endswith(("_URL", "_TOKEN", "_PASSWORD", "_SECRET", "_KEY"))


def test_secrets_are_only_referenced_never_written(docs: list[Doc]) -> None:
    """No Secret is rendered; every URL or token variable comes from a secretKeyRef of
    saga-secrets, and the ConfigMaps hold no URL, token or credential."""
    assert not _of(docs, "Secret")
    for doc in docs:
        for container in _containers(doc):
            for var in container.get("env", []):
                if _is_secret_name(var["name"]):
                    ref = var.get("valueFrom", {}).get("secretKeyRef")
                    assert ref is not None, f"{doc['metadata']['name']}: {var['name']} literal"
                    assert ref["name"] == SECRET
                    assert "value" not in var
    for config in _of(docs, "ConfigMap").values():
        for key, value in config["data"].items():
            assert not _is_secret_name(key), key
            assert "://" not in value, key


def test_services_check_the_topology_the_job_declares_and_run_unprivileged(
    docs: list[Doc],
) -> None:
    """The services get SAGA_DECLARE_TOPOLOGY=false (the job declares, as administrator)
    and the health port from the ConfigMap; every container runs as non-root."""
    config = _of(docs, "ConfigMap")["saga-config"]["data"]
    assert config["SAGA_DECLARE_TOPOLOGY"] == "false"
    assert config["SAGA_METRICS_PORT"] == "9100"
    assert config["SAGA_MONGODB_WRITE_CONCERN"] == "majority"
    for doc in docs:
        for container in _containers(doc):
            assert {"configMapRef": {"name": "saga-config"}} in container["envFrom"]
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
        spec = _pod_spec(doc)
        if spec is not None:
            assert spec["securityContext"]["runAsNonRoot"] is True
            assert spec["automountServiceAccountToken"] is False


def test_each_service_uses_its_own_broker_user_and_the_job_the_administrator() -> None:
    docs = render(BASE)
    for doc in docs:
        for container in _containers(doc):
            env = {v["name"]: v for v in container.get("env", [])}
            key = env["AMQP_URL"]["valueFrom"]["secretKeyRef"]["key"]
            name = doc["metadata"]["name"]
            assert key == ("amqp-url-admin" if name == "saga-topology" else f"amqp-url-{name}")


def test_the_example_secret_lists_every_referenced_key_with_placeholders_only() -> None:
    """secret.example.yaml documents the keys; it is not a resource of the overlay, and
    its values are placeholders."""
    overlay = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    assert "secret.example.yaml" not in overlay["resources"]
    (example,) = _load(OVERLAY / "secret.example.yaml")
    assert example["metadata"]["name"] == SECRET
    values = example["stringData"]
    assert all("CHANGE-ME" in v for v in values.values())
    referenced = {
        var["valueFrom"]["secretKeyRef"]["key"]
        for doc in render(OVERLAY)
        for container in _containers(doc)
        for var in container.get("env", [])
        if "secretKeyRef" in var.get("valueFrom", {})
    }
    assert referenced == set(values)


def test_the_overlay_changes_image_replicas_and_resources() -> None:
    base = _of(render(BASE), "Deployment")
    overlay = _of(render(OVERLAY), "Deployment")
    for name in SERVICES:
        (container,) = _containers(overlay[name])
        assert container["image"].startswith("registry.example.com/")
    assert overlay["orchestrator"]["spec"]["replicas"] > base["orchestrator"]["spec"]["replicas"]
    (before,) = _containers(base["orchestrator"])
    (after,) = _containers(overlay["orchestrator"])
    assert after["resources"] != before["resources"]
    assert after["readinessProbe"] == before["readinessProbe"]  # the patch merged, not replaced


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize("folder", [BASE, OVERLAY], ids=["base", "overlay"])
def test_kubectl_kustomize_renders_what_the_test_renders(folder: Path) -> None:
    """The renderer above agrees with kustomize itself, where it is installed."""
    done = subprocess.run(
        ["kubectl", "kustomize", str(folder)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    assert sorted(yaml.safe_load_all(done.stdout), key=key) == sorted(render(folder), key=key)
