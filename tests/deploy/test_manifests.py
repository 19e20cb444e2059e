"""deploy/: the Kubernetes manifests of the candidate service, rendered and schema-checked.

Each kustomization (base and every overlay) is rendered with `kubectl kustomize`, and every
rendered object is validated against the Kubernetes OpenAPI schemas (kubernetes-validate, offline,
strict: an unknown or misspelt field fails) for the oldest and newest versions we support. Then
the wiring a schema cannot see: probes on the service's real endpoints, the port the container
listens on, settings variables the service actually reads, secrets from a Secret, the publish root
mounted read-only where `--model` points, the HPA aimed at the Deployment, non-root.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from serving.http.settings import ENV_PREFIX, ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUSTOMIZATIONS = sorted(p.parent for p in DEPLOY.rglob("kustomization.yaml"))
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
IMAGE_UID = 1000  # Dockerfile: useradd --uid 1000 homefeed


def render(directory: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not found: it renders the kustomizations (apt-get install kubernetes-client)")
    process = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    assert process.returncode == 0, f"kubectl kustomize {directory}: {process.stderr}"
    return [doc for doc in yaml.safe_load_all(process.stdout) if doc]


@pytest.fixture(scope="module", params=KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(DEPLOY)))
def rendered(request) -> dict[str, dict]:
    docs = render(request.param)
    by_kind = {doc["kind"]: doc for doc in docs}
    assert len(by_kind) == len(docs), "one object of each kind expected"
    return by_kind


def test_there_are_a_base_and_overlays():
    names = {str(p.relative_to(DEPLOY)) for p in KUSTOMIZATIONS}
    assert {"base", "overlays/dev", "overlays/production"} <= names


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_is_valid_for_kubernetes(rendered, version):
    import kubernetes_validate

    assert set(rendered) == {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "PersistentVolumeClaim",
    }
    for kind, doc in rendered.items():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{kind} {doc['metadata']['name']} is not valid for Kubernetes {version}: {error.message}")


def test_the_validator_catches_a_misspelt_field(rendered):
    """The schema check above can fail: a typo in a probe is refused."""
    import kubernetes_validate

    deployment = copy.deepcopy(rendered["Deployment"])
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["httpGet"]["pathh"] = container["readinessProbe"]["httpGet"].pop("path")
    with pytest.raises(kubernetes_validate.ValidationError, match="pathh"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def _container(rendered) -> dict:
    (container,) = rendered["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


def _option(args: list[str], name: str) -> str:
    assert name in args, f"{name} missing from {args}"
    return args[args.index(name) + 1]


def test_the_container_serves_the_mounted_publish_root_on_its_port(rendered):
    container = _container(rendered)
    args = container["args"]
    assert args[0] == "serve"
    port = int(_option(args, "--port"))
    assert _option(args, "--host") == "0.0.0.0"
    assert [p["containerPort"] for p in container["ports"] if p["name"] == "http"] == [port]
    model = _option(args, "--model")
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[model]["readOnly"] is True
    volumes = {v["name"]: v for v in rendered["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    claim = volumes[mounts[model]["name"]]["persistentVolumeClaim"]["claimName"]
    assert claim == rendered["PersistentVolumeClaim"]["metadata"]["name"]
    assert rendered["Service"]["spec"]["ports"][0]["targetPort"] in ("http", port)


def test_probes_use_the_service_endpoints(rendered):
    container = _container(rendered)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == "http"


def test_settings_come_from_the_secret_under_the_service_prefix(rendered):
    env = {e["name"]: e for e in _container(rendered)["env"]}
    assert all(name.startswith(ENV_PREFIX) for name in env)
    for name in ("CANDIDATES_REDIS_URL", "CANDIDATES_WRITE_TOKEN", "CANDIDATES_ADMIN_TOKEN"):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "homefeed-candidates" and ref["key"]
        assert "value" not in env[name], f"{name} must not be written into the manifest"
    # Variables the service reads today (the write token belongs to the write endpoints).
    fields = set(ServiceSettings.model_fields)
    assert {"redis_url", "admin_token"} <= fields
    for name in env:
        field = name[len(ENV_PREFIX) :].lower()
        assert field in fields or field == "write_token", f"{name}: no such service setting"


def test_resources_autoscaling_and_non_root(rendered):
    deployment = rendered["Deployment"]
    container = _container(rendered)
    assert {"cpu", "memory"} <= set(container["resources"]["requests"]) and "memory" in container["resources"]["limits"]
    hpa = rendered["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == IMAGE_UID
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (
        deployment["spec"]["selector"]["matchLabels"],
        rendered["Service"]["spec"]["selector"],
        rendered["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    ):
        assert selector and selector.items() <= labels.items()
