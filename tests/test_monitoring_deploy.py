"""The monitoring that ships in deploy/: Prometheus config and alert rules checked and unit-tested by promtool,
the Grafana dashboard's queries parsed by promtool, and the compose file's Prometheus wired to both."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from tests.test_metrics import promtool

ROOT = Path(__file__).resolve().parent.parent
PROM = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "windflow.json"


def run(*args: str, cwd: Path = PROM) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_prometheus_config_and_rules_check():
    proc = run("check", "config", "prometheus.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run("check", "rules", "alerts.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = {
        rule["alert"]
        for group in yaml.safe_load((PROM / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    }
    assert {
        "WindflowServiceDown",
        "WindflowServiceCrashLooping",
        "WindflowServiceGaveUp",
        "WindflowServiceUnwatched",
        "WindflowWorkersMissing",
        "WindflowOutboxLag",
    } <= names


def test_alert_rules_unit_tests_pass():
    proc = run("test", "rules", "alerts.test.yml")
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr
    tested = {
        t["alertname"]
        for case in yaml.safe_load((PROM / "alerts.test.yml").read_text())["tests"]
        for t in case["alert_rule_test"]
    }
    names = {
        rule["alert"]
        for group in yaml.safe_load((PROM / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    }
    assert names == tested, f"alerts without a unit test: {names - tested}"


def test_alert_rule_unit_tests_catch_a_broken_rule(tmp_path):
    """The unit tests have teeth: with the service-down rule's `for` dropped, they fail."""
    broken = (PROM / "alerts.yml").read_text().replace("        for: 2m\n", "", 1)
    (tmp_path / "alerts.yml").write_text(broken)
    (tmp_path / "alerts.test.yml").write_text((PROM / "alerts.test.yml").read_text())
    proc = run("test", "rules", "alerts.test.yml", cwd=tmp_path)
    assert proc.returncode != 0 and "WindflowServiceDown" in proc.stdout + proc.stderr


def dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    out = []
    for panel in doc["panels"]:
        for target in panel.get("targets", []):
            out.append(target["expr"])
    return out


def test_dashboard_queries_parse(tmp_path):
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] == "windflow" and doc["panels"]
    assert {v["name"] for v in doc["templating"]["list"]} == {"datasource", "service"}
    exprs = dashboard_exprs()
    assert len(exprs) >= 10
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {
                        "record": f"dashboard:query{i}",
                        "expr": expr.replace("$__rate_interval", "5m").replace("$service", ".*"),
                    }
                    for i, expr in enumerate(exprs)
                ],
            }
        ]
    }
    (tmp_path / "dashboard_rules.yml").write_text(yaml.safe_dump(rules))
    proc = run("check", "rules", "dashboard_rules.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def metric_names(text: str) -> set[str]:
    """Metric family names a PromQL text uses (``_bucket``/``_count``/``_sum``/``_total`` stripped)."""
    names = set(re.findall(r"\b((?:windflow|temporal)_[a-z_]+)", text))
    return {re.sub(r"_(bucket|count|sum|total)$", "", n) for n in names}


def dashboard_and_alert_metric_names() -> set[str]:
    return metric_names("\n".join(dashboard_exprs())) | metric_names((PROM / "alerts.yml").read_text())


def test_compose_prometheus_mounts_the_shipped_config():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    prom = compose["services"]["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prom["volumes"]
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["windflow-api"]["static_configs"][0]["targets"] == ["api:8000"]
    worker_sd = jobs["windflow-worker"]["dns_sd_configs"][0]
    worker_env = compose["services"]["worker"]["environment"]
    assert worker_sd["names"] == ["worker"] and str(worker_sd["port"]) == worker_env["WINDFLOW_WORKER_METRICS_PORT"]
    assert worker_env["WINDFLOW_WORKER_METRICS_HOST"] == "0.0.0.0"  # reachable from the compose network


def test_compose_grafana_provisions_prometheus_and_the_dashboard():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    grafana = compose["services"]["grafana"]
    mounts = {volume.split(":")[0]: volume.split(":")[1] for volume in grafana["volumes"]}
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/windflow.yml").read_text())
    dashboards_dir = provider["providers"][0]["options"]["path"]
    assert mounts["./deploy/grafana/windflow.json"] == f"{dashboards_dir}/windflow.json"
    source = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    prom = source["datasources"][0]
    assert prom["type"] == "prometheus" and prom["isDefault"] and prom["url"] == "http://prometheus:9090"
    assert "prometheus" in compose["services"] and grafana["depends_on"]["prometheus"]["condition"] == "service_healthy"
