"""The shipped observability files: the alert rules pass ``promtool check rules`` and fire
on the series they are meant for (``promtool test rules``), the Compose Prometheus config
passes ``promtool check config`` with those rules, the Grafana dashboard and its
provisioning are well formed, and the Compose ``observability`` profile mounts them.
Which metric names they use is checked against a live worker in
tests/e2e/test_observability_metrics.py.

promtool comes from Debian's ``prometheus`` package (``.ci/run`` installs it): a missing
promtool fails these tests, it never skips them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.promql import dashboard_expressions, metric_names, rule_expressions

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "agent-runtime.json"
ALERTS = {
    "AgentRuntimeLagGrowing",
    "AgentRuntimeOldestPendingTooOld",
    "AgentRuntimeDeadLettersRising",
    "AgentRuntimePendingEntriesDeleted",
    "AgentRuntimeBreakerOpen",
    "AgentRuntimeNoLiveWorker",
    "AgentRuntimeLLMSpendOverBudget",
    "AgentRuntimeLLMSpendOverDailyBudget",
}


def promtool(*args: str, cwd: Path = ROOT) -> str:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: apt-get install prometheus (.ci/run installs it)"
    result = subprocess.run(
        [tool, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_alert_rules_pass_promtool_check_rules() -> None:
    out = promtool("check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert f"SUCCESS: {len(ALERTS)} rules found" in out


def test_alert_rules_fire_on_the_series_they_watch() -> None:
    """deploy/prometheus/alerts.test.yml: each alert fires on a scripted series and stays
    quiet on the healthy one."""
    promtool("test", "rules", "alerts.test.yml", cwd=PROMETHEUS)
    tests = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())
    tested = {
        case["alertname"]
        for test in tests["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert tested == ALERTS, "every alert has a firing case"


def test_compose_prometheus_config_passes_promtool_with_the_rules(tmp_path: Path) -> None:
    """prometheus.yml as the Compose profile mounts it: the rule files it names are the
    shipped alerts.yml (checked together by ``promtool check config``)."""
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    (tmp_path / "rules").mkdir()
    shutil.copy(PROMETHEUS / "alerts.yml", tmp_path / "rules" / "alerts.yml")
    config["rule_files"] = [str(tmp_path / "rules" / "*.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    out = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert "SUCCESS: 8 rules found" in out
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "agent-runtime"]
    assert job["honor_labels"] is True, "keep the workers' own agent label"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    workers = {
        name
        for name, service in compose["services"].items()
        if "AGENT_RUNTIME_AGENT" in service.get("environment", {})
    }
    (dns,) = job["dns_sd_configs"]
    assert set(dns["names"]) == workers, "every worker service is scraped"
    (relabel,) = [r for r in job["relabel_configs"] if r["target_label"] == "agent"]
    for name in workers:
        env = compose["services"][name]["environment"]
        assert int(env["AGENT_RUNTIME_METRICS_PORT"]) == dns["port"]
        assert str(dns["port"]) in compose["services"][name]["expose"]
        # Prometheus anchors relabel regexes; the default replacement is $1
        found = re.fullmatch(relabel["regex"], name)
        assert found and found.group(1) == env["AGENT_RUNTIME_AGENT"], name


def test_podmonitor_labels_targets_as_the_rules_expect() -> None:
    monitor = yaml.safe_load((PROMETHEUS / "podmonitor.yaml").read_text())
    assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"  # job="agent-runtime"
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics" and endpoint["honorLabels"] is True
    (relabel,) = endpoint["relabelings"]
    assert relabel["targetLabel"] == "agent"
    deployment = yaml.safe_load_all((ROOT / "deploy/kubernetes/agent-planner.yaml").read_text())
    pod = next(d for d in deployment if d["kind"] == "Deployment")["spec"]["template"]
    assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == "agent-runtime"
    (box,) = pod["spec"]["containers"]
    (port,) = [p for p in box["ports"] if p["name"] == "metrics"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port["containerPort"])
    env = {e["name"]: e.get("value") for e in box["env"]}
    assert env["AGENT_RUNTIME_METRICS_PORT"] == str(port["containerPort"])


# ------------------------------------------------------------------------ Grafana
@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def test_dashboard_shows_each_concern_per_agent_type(dashboard: dict[str, Any]) -> None:
    exprs = [e for title, e in dashboard_expressions(dashboard) if not title.startswith("variable")]
    wanted = {
        "throughput": "agent_runtime_messages_handled_total",
        "handler latency": "agent_runtime_handle_duration_seconds_bucket",
        "lag": "agent_runtime_consumer_group_lag_messages",
        "pending": "agent_runtime_pending_messages",
        "oldest pending age": "agent_runtime_oldest_pending_age_seconds",
        "dead letters": "agent_runtime_messages_dead_lettered_total",
        "breaker state": "agent_runtime_breaker_state",
        "LLM tokens": "agent_runtime_llm_tokens_total",
        "LLM cost": "agent_runtime_llm_cost_usd_total",
        "live workers": "up",
    }
    for concern, metric in wanted.items():
        users = [e for e in exprs if metric in metric_names(e)]
        assert users, f"no panel shows {concern}"
        assert all('agent=~"$agent"' in e for e in users), f"{concern}: not per agent type"
        assert all("by (agent" in e for e in users if "(" in e), f"{concern}: not split by agent"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"]
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["agent"]["multi"] and variables["agent"]["includeAll"]


def test_grafana_provisioning_loads_the_dashboard_from_prometheus() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    grafana, prometheus = compose["services"]["grafana"], compose["services"]["prometheus"]
    assert grafana["profiles"] == prometheus["profiles"] == ["observability"]
    mounts = {m.split(":")[1]: ROOT / m.split(":")[0] for m in grafana["volumes"] if "./" in m}
    datasources = yaml.safe_load(
        (mounts["/etc/grafana/provisioning"] / "datasources" / "prometheus.yml").read_text()
    )
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load(
        (mounts["/etc/grafana/provisioning"] / "dashboards" / "agent-runtime.yml").read_text()
    )
    (provider,) = providers["providers"]
    assert (mounts[provider["options"]["path"]] / DASHBOARD.name).exists()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"
    prom_mounts = {m.split(":")[1]: ROOT / m.split(":")[0] for m in prometheus["volumes"]}
    assert prom_mounts["/etc/prometheus/prometheus.yml"] == PROMETHEUS / "prometheus.yml"
    assert prom_mounts["/etc/prometheus/rules/alerts.yml"] == PROMETHEUS / "alerts.yml"
    for service in (grafana, prometheus):
        assert all(p.startswith("127.0.0.1:") for p in service["ports"]), "localhost only"


# ------------------------------------------------------------------------ the name reader
@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('sum by (agent) (rate(a_total{agent=~"$agent"}[$__rate_interval]))', {"a_total"}),
        ("histogram_quantile(0.95, sum by (le) (rate(h_bucket[5m])))", {"h_bucket"}),
        ('x{l="}{ by (y)"} offset 5m > bool 1e3', {"x"}),
        ("a * on (job) group_left(version) b unless c and d or e", set("abcde")),
        ("max_over_time(g[1h:5m]) / ignoring (x) count without (y) (k)", {"g", "k"}),
        ("absent(nope{job=`x`}) and rate(m:rec[${__interval}])", {"nope", "m:rec"}),
    ],
)
def test_metric_names_are_read_out_of_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_every_rule_and_panel_names_a_metric() -> None:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    found = list(rule_expressions(rules))
    assert {name for name, _ in found} == ALERTS
    dashboard = json.loads(DASHBOARD.read_text())
    for where, expr in [*found, *dashboard_expressions(dashboard)]:
        assert metric_names(expr), f"{where}: no metric read from {expr!r}"


def test_dashboard_queries_are_valid_promql(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """Each panel query, with Grafana's variables given values, parses as PromQL: checked by
    ``promtool check rules`` as recording rules."""
    values = {"$__rate_interval": "1m", "$agent": ".+", "${datasource}": "prometheus"}
    rules = []
    for n, (where, expr) in enumerate(dashboard_expressions(dashboard)):
        for name, value in values.items():
            expr = expr.replace(name, value)
        assert "$" not in expr, f"{where}: an unknown variable in {expr!r}"
        rules.append({"record": f"dashboard:query_{n}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert f"SUCCESS: {len(rules)} rules found" in promtool("check", "rules", str(path))
