"""deploy/kubernetes/ and the Dockerfile agree with the sidegate and Envoy configs they carry.

No cluster runs here, so the pod is checked by what can be checked on one machine: the
sidegate container's files are laid out as its volume mounts would lay them out, and
``sidegate check-config`` loads that config (policies compile, rules and key file load);
``envoy --mode validate`` accepts the Envoy config; probes, ports, socket path and mounted file
names are cross-checked between the Deployment, the Service and both configs.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidegate.admin import build_admin_app
from sidegate.cli import main
from tests.conftest import REPO_ROOT
from tests.harness import envoy_binary

DEPLOY = REPO_ROOT / "deploy" / "kubernetes"


def manifests() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted(DEPLOY.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            found[doc["kind"]] = doc
    return found


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict[str, Any]]:
    docs = manifests()
    assert {"ConfigMap", "Secret", "Deployment", "Service", "Kustomization"} <= docs.keys()
    listed = set(docs["Kustomization"]["resources"])
    assert listed == {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    return docs


def container(k8s: dict[str, Any], name: str) -> dict[str, Any]:
    spec = k8s["Deployment"]["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == name)


def env(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", [])}


def materialize(k8s: dict[str, Any], name: str, root: Path) -> None:
    """Write the container's ConfigMap/Secret volumes under ``root`` + their mount paths."""
    volumes = {v["name"]: v for v in k8s["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    for mount in container(k8s, name)["volumeMounts"]:
        volume = volumes[mount["name"]]
        target = root / mount["mountPath"].lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        if "configMap" in volume:
            data, items = k8s["ConfigMap"]["data"], volume["configMap"].get("items")
            assert volume["configMap"]["name"] == k8s["ConfigMap"]["metadata"]["name"]
        elif "secret" in volume:
            data, items = k8s["Secret"]["stringData"], volume["secret"].get("items")
            assert volume["secret"]["secretName"] == k8s["Secret"]["metadata"]["name"]
        else:
            continue
        for item in items or [{"key": k, "path": k} for k in data]:
            path = target / item["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(data[item["key"]])


def rooted(text: str, root: Path) -> str:
    """Absolute in-pod paths made relative to ``root`` (where materialize() put them)."""
    return re.sub(r"(?<=[\s:{,])/(etc|run)/", lambda m: f"{root}/{m.group(1)}/", text)


def test_sidegate_config_loads_from_the_mounted_files(k8s: dict, tmp_path: Path) -> None:
    materialize(k8s, "sidegate", tmp_path)
    config_path = tmp_path / env(container(k8s, "sidegate"))["SIDEGATE_CONFIG"].lstrip("/")
    assert config_path.exists(), "SIDEGATE_CONFIG names no mounted file"
    config_path.write_text(rooted(config_path.read_text(), tmp_path))
    assert main(["check-config", str(config_path)]) == 0
    config = yaml.safe_load(config_path.read_text())
    # The files the config names are the ones the mounts provide.
    assert Path(config["authz"]["policy"]["directory"], "envoy", "authz.rego").exists()
    assert Path(config["ratelimit"]["rules_dir"], "sidegate.yaml").exists()
    store = config["authz"]["identity"]["sources"][0]["store"]["path"]
    assert Path(store).exists()
    # The pod ships the default policy and the example rules unchanged.
    data = k8s["ConfigMap"]["data"]
    assert data["authz.rego"] == (REPO_ROOT / "policies/envoy/authz.rego").read_text()
    assert data["ratelimit.yaml"] == (REPO_ROOT / "examples/ratelimit/sidegate.yaml").read_text()


def test_probes_and_ports_match_the_admin_endpoints(k8s: dict) -> None:
    sidegate = container(k8s, "sidegate")
    admin_port = int(env(sidegate)["SIDEGATE_ADMIN_ADDRESS"].rpartition(":")[2])
    ports = {p["name"]: p["containerPort"] for p in sidegate["ports"]}
    assert ports == {"admin": admin_port}
    routes = {r.resource.canonical for r in build_admin_app(lambda: True).router.routes()}
    assert sidegate["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert sidegate["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert sidegate["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert {"/readyz", "/healthz"} <= routes
    for c in k8s["Deployment"]["spec"]["template"]["spec"]["containers"]:
        assert c["resources"]["requests"].keys() >= {"cpu", "memory"}, c["name"]
        assert c["securityContext"]["allowPrivilegeEscalation"] is False


def test_envoy_reaches_sidegate_over_the_shared_socket(k8s: dict, tmp_path: Path) -> None:
    materialize(k8s, "envoy", tmp_path)
    envoy = container(k8s, "envoy")
    config_path = tmp_path / envoy["args"][envoy["args"].index("-c") + 1].lstrip("/")
    cfg = yaml.safe_load(config_path.read_text())
    clusters = {c["name"]: c for c in cfg["static_resources"]["clusters"]}
    endpoint = clusters["sidegate"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    socket = endpoint["endpoint"]["address"]["pipe"]["path"]
    assert env(container(k8s, "sidegate"))["SIDEGATE_GRPC_ADDRESS"] == f"unix://{socket}"
    # The socket's directory is one emptyDir mounted by both containers.
    volumes = {v["name"]: v for v in k8s["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    mounts = [
        {m["mountPath"]: m["name"] for m in container(k8s, name)["volumeMounts"]}
        for name in ("envoy", "sidegate")
    ]
    directory = str(Path(socket).parent)
    assert mounts[0][directory] == mounts[1][directory]
    assert "emptyDir" in volumes[mounts[0][directory]]
    # Public listener port = the container port the Service targets; admin on loopback.
    listener = next(x for x in cfg["static_resources"]["listeners"] if x["name"] == "ingress")
    port = listener["address"]["socket_address"]["port_value"]
    assert {p["name"]: p["containerPort"] for p in envoy["ports"]} == {"http": port}
    assert k8s["Service"]["spec"]["ports"][0]["targetPort"] == "http"
    assert envoy["readinessProbe"]["tcpSocket"]["port"] == "http"
    assert cfg["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(config_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_pod_user_matches_the_image(k8s: dict) -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    security = k8s["Deployment"]["spec"]["template"]["spec"]["securityContext"]
    assert f"USER {security['runAsUser']}:{security['runAsGroup']}" in dockerfile
    assert "--uid 10001" in dockerfile and security["runAsUser"] == 10001
    assert 'ENTRYPOINT ["sidegate"]' in dockerfile
    # regopy's shared library links libatomic.so.1 (found building the image from Debian).
    assert "libatomic1" in dockerfile.rsplit("FROM ", 1)[1]
    assert "/readyz" in dockerfile.split("HEALTHCHECK", 1)[1]
    exposed = re.search(r"^EXPOSE (.+)$", dockerfile, re.M)
    assert exposed is not None and exposed.group(1).split() == ["9191", "9192"]
    assert "SIDEGATE_GRPC_ADDRESS=0.0.0.0:9191" in dockerfile
    assert "SIDEGATE_ADMIN_ADDRESS=0.0.0.0:9192" in dockerfile
