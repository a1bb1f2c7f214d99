"""The monitoring of k8s/monitoring/ checked with the tools that will run it, so a broken rule,
route or dashboard fails here rather than silently in production: promtool checks and unit-tests
the alert rules, amtool checks the Alertmanager routing, every metric name the alerts and the
Grafana dashboard use must be one the API exports (a renamed metric would otherwise leave an
alert that never fires), and a real Prometheus scrapes a real `aiplatform serve`.

promtool, amtool and prometheus are Debian's packages (`apt-get install prometheus
prometheus-alertmanager`, as .ci/run does); a missing tool fails the test, it is never skipped.
Debian builds prometheus and promtool without Kubernetes service discovery, which the cluster jobs
of prometheus.yaml use: ``check_config`` works around that; infra/test_cluster_monitoring.py checks
those jobs.
"""

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from aiplatform_dagster.serving.audit import AuditLog, JsonLinesAudit, TextPolicy
from aiplatform_dagster.serving.metrics import ServingMetrics
from aiplatform_dagster.serving.spend import LocalSpend
from aiplatform_dagster_tests.dagster_dev import PROJECT_ROOT, free_port, wait_until
from aiplatform_dagster_tests.serving.served import ServedApi, aiplatform_serve, responds

MONITORING = PROJECT_ROOT / "k8s" / "monitoring"
PROMTOOL = Path("/usr/bin/promtool")
AMTOOL = Path("/usr/bin/amtool")
PROMETHEUS = Path("/usr/bin/prometheus")
METRIC_NAME = re.compile(r"\baiplatform_[a-z_]+")
SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "info": ("_info",),
    "gauge": ("",),
}
RECEIVERS = {"page": "pagerduty,slack", "ticket": "slack"}
"""Who alertmanager.yaml notifies for each severity."""
QUESTION = "How long are vector index backups kept?"
WAIT_S = 60


def tool(path: Path) -> str:
    """The tool's path; a missing one fails the test (CI installs it, see .ci/run)."""
    if not path.is_file():
        pytest.fail(
            f"{path} is missing: `apt-get install prometheus prometheus-alertmanager` "
            "(.ci/run does)"
        )
    return str(path)


def run(*command: str) -> str:
    """Run a tool in k8s/monitoring/, assert it succeeded, and return what it printed."""
    done = subprocess.run(
        command, cwd=MONITORING, capture_output=True, text=True, timeout=120, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{output}"
    return output


def check_config(promtool: str, tmp_path: Path) -> str:
    """`promtool check config prometheus.yaml` as far as Debian's promtool can: it is built
    without Kubernetes discovery (the package's NEWS.Debian), so a copy with each
    ``kubernetes_sd_configs`` replaced by a static target is parsed whole (jobs, relabelling,
    TLS, authorization) with --syntax-only, as the service account's token exists only in a pod;
    then each rule file it names is checked, as the full check would."""
    config = yaml.safe_load((MONITORING / "prometheus.yaml").read_text())
    for job in config["scrape_configs"]:
        if job.pop("kubernetes_sd_configs", None) is not None:
            job["static_configs"] = [{"targets": ["kubernetes-sd.invalid:443"]}]
    copy = tmp_path / "prometheus.yaml"
    copy.write_text(yaml.safe_dump(config))
    output = run(promtool, "check", "config", "--syntax-only", str(copy))
    for rule_file in config["rule_files"]:
        output += run(promtool, "check", "rules", rule_file)
    return output


def test_alert_rules_pass_promtool_check_and_their_unit_tests(tmp_path: Path) -> None:
    promtool = tool(PROMTOOL)
    assert "SUCCESS: 10 rules found" in run(promtool, "check", "rules", "alerts.yaml")
    assert "SUCCESS" in run(promtool, "test", "rules", "alerts_test.yaml")
    check_config(promtool, tmp_path)  # also checks alerts.yaml


def test_alertmanager_config_is_valid_and_pages_go_to_pagerduty_and_slack() -> None:
    amtool = tool(AMTOOL)
    run(amtool, "check-config", "alertmanager.yaml")
    for severity, receivers in RECEIVERS.items():
        run(
            amtool, "config", "routes", "test", "--config.file=alertmanager.yaml",
            f"--verify.receivers={receivers}", f"severity={severity}", "alertname=Any",
        )  # fmt: skip


def exported_names(tmp_path: Path) -> set[str]:
    """Every sample name a ``ServingMetrics`` can expose, read from its registry's families
    (the scrape-time ones included: a drift report is present, the spend ledger readable)."""
    reports = tmp_path / "reports"
    reports.mkdir()
    drift = {"drifted": True, "features": [{"feature": "length", "psi": 0.3}]}
    (reports / "2024-01-01.json").write_text(json.dumps(drift))
    audit = AuditLog(JsonLinesAudit(tmp_path / "audit"), TextPolicy.HASHED)
    try:
        metrics = ServingMetrics(
            spend=LocalSpend(tmp_path / "spend.sqlite"),
            monthly_budget_usd=25.0,
            live=lambda: dict(
                release_id="r", index_release="i", router_version="none", reranker_version="none"
            ),
            drift_reports=reports,
            audit=audit,
        )
        families = list(metrics.registry.collect())
    finally:
        audit.close()
    unknown = {f"{f.name} ({f.type})" for f in families if f.type not in SAMPLE_SUFFIXES}
    assert not unknown, f"metric types this test does not know the sample names of: {unknown}"
    return {family.name + suffix for family in families for suffix in SAMPLE_SUFFIXES[family.type]}


def dashboard_expressions(node: Any) -> Iterator[str]:
    """Every PromQL expression (``expr``) anywhere in the dashboard's JSON."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from dashboard_expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_expressions(item)


def alert_rules(file: str = "alerts.yaml") -> list[dict[str, Any]]:
    groups = yaml.safe_load((MONITORING / file).read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_every_metric_in_the_alerts_and_the_dashboard_is_one_the_api_exports(
    tmp_path: Path,
) -> None:
    exported = exported_names(tmp_path)
    assert {
        "aiplatform_http_requests_total",
        "aiplatform_http_request_duration_seconds_bucket",
        "aiplatform_release_info",
        "aiplatform_drift_detected",
        "aiplatform_spend_month_to_date_usd",
    } <= exported, exported
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    assert dashboard["schemaVersion"] == 39
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    panels = dashboard["panels"]
    assert len(panels) >= 10 and all(p["datasource"]["uid"] == "${DS_PROMETHEUS}" for p in panels)
    used = {
        "grafana-dashboard.json": list(dashboard_expressions(dashboard)),
        "alerts.yaml": [rule["expr"] for rule in alert_rules()],
    }
    for source, expressions in used.items():
        names = {name for expr in expressions for name in METRIC_NAME.findall(expr)}
        assert len(names) >= 8, (source, names)
        assert names <= exported, f"{source} uses metrics the API does not export: " + ", ".join(
            sorted(names - exported)
        )


def test_every_alert_has_a_severity_and_says_what_to_check() -> None:
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} >= {
        "AiplatformHighP95Latency", "AiplatformHighErrorRate", "AiplatformLLMUnavailable",
        "AiplatformCostPerHourHigh", "AiplatformBudget80Percent", "AiplatformBudget100Percent",
        "AiplatformQueryDrift", "AiplatformCacheBypassed", "AiplatformNoReleaseServed",
    }  # fmt: skip
    for rule in rules:
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        assert rule["annotations"].keys() == {"summary", "description"}, rule["alert"]
        assert len(rule["annotations"]["description"]) > 100, rule["alert"]


def _prometheus_query(base: str, query: str) -> dict[str, Any]:
    response = httpx.get(f"{base}/api/v1/query", params={"query": query}, timeout=5)
    body = response.json()
    assert body["status"] == "success", (query, body)
    return body["data"]


def _stop(process: subprocess.Popen[Any]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def test_a_real_prometheus_scrapes_the_api_and_evaluates_the_alerts(
    storage: Path, tmp_path: Path
) -> None:
    """`aiplatform serve` answers three queries; Prometheus, scraping it every second with
    alerts.yaml loaded, counts exactly those three and evaluates every rule without error."""
    prometheus_bin = tool(PROMETHEUS)
    with aiplatform_serve(storage, tmp_path) as api:
        scrape_and_evaluate(api, prometheus_bin, tmp_path)


def scrape_and_evaluate(api: ServedApi, prometheus_bin: str, tmp_path: Path) -> None:
    prometheus = f"http://127.0.0.1:{free_port()}"
    config = tmp_path / "prometheus.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(MONITORING / "alerts.yaml")],
                "scrape_configs": [
                    {
                        "job_name": "aiplatform-api",
                        "metrics_path": "/metrics",
                        "static_configs": [{"targets": [api.base.removeprefix("http://")]}],
                    }
                ],
            }
        )
    )
    prometheus_log = (tmp_path / "prometheus.log").open("w")
    scraper: subprocess.Popen[Any] | None = None
    try:
        for _ in range(3):
            response = httpx.post(
                f"{api.base}/v1/query",
                json={"question": QUESTION},
                headers={"Authorization": f"Bearer {api.key}"},
                timeout=WAIT_S,
            )
            assert response.status_code == 200, response.text
        scraper = subprocess.Popen(
            [
                prometheus_bin, f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address={prometheus.removeprefix('http://')}",
            ],
            stdout=prometheus_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_until(lambda: responds(f"{prometheus}/-/ready"), WAIT_S, "Prometheus ready")

        served = 'sum(aiplatform_http_requests_total{endpoint="/v1/query",status="200"})'

        def counted() -> float | None:  # the 3 queries were answered before the first scrape
            result = _prometheus_query(prometheus, served)["result"]
            return float(result[0]["value"][1]) if result else None

        assert wait_until(counted, WAIT_S, "Prometheus counting the queries") == 3
        up = _prometheus_query(prometheus, 'up{job="aiplatform-api"}')["result"]
        assert [sample["value"][1] for sample in up] == ["1"]

        def evaluated() -> list[dict[str, Any]] | None:
            groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]
            rules = [rule for group in groups["groups"] for rule in group["rules"]]
            return rules if rules and all(rule["health"] == "ok" for rule in rules) else None

        rules = wait_until(evaluated, WAIT_S, "Prometheus evaluating every alert rule")
        assert len(rules) == len(alert_rules())
        firing = {rule["name"] for rule in rules if rule["state"] == "firing"}
        assert "AiplatformNoReleaseServed" not in firing and "AiplatformTargetDown" not in firing

        dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
        for expr in dashboard_expressions(dashboard):  # each panel's query is valid PromQL
            _prometheus_query(prometheus, expr.replace("$__rate_interval", "1m"))
    except AssertionError as error:  # what the two servers logged tells why
        prometheus_log.flush()
        tails = ""
        for log in (api.log, Path(prometheus_log.name)):
            tails += f"\n--- {log} ---\n" + log.read_text()[-3000:]
        raise AssertionError(f"{error}{tails}") from None
    finally:
        if scraper is not None:
            _stop(scraper)
        prometheus_log.close()
