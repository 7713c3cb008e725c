"""The alerts and the dashboard are valid, use only metrics the controller exports, fire
when their runbooks say they do, and link to runbooks that exist."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_helpers import DEPLOY, OVERLAYS, ROOT, Manifest, find

from controller.providers import Quality
from controller.telemetry import PHASES, Telemetry

Render = Callable[[Path], list[Manifest]]

RULES_FILE = DEPLOY / "prometheus-rules.yaml"
PROMETHEUS_RULE = DEPLOY / "base" / "prometheusrule.yaml"
DASHBOARD = DEPLOY / "base" / "dashboards" / "rollwise.json"
OPERATIONS = ROOT / "docs" / "operations.md"
ALERT_TESTS = Path(__file__).with_name("alerts.test.yaml")
PROMTOOL_TIMEOUT_S = 60

# Metrics the dashboard uses that other modules (lineage, notifications) are adding to
# the controller now, outside controller/telemetry.py. To be reconciled when they land:
# each should then be registered where the controller's /metrics serves it.
OTHER_MODULES_METRICS = {
    "rollwise_lineage_pending",
    "rollwise_lineage_write_errors_total",
    "rollwise_lineage_writes_total",
    "rollwise_notifications_total",
    "rollwise_notification_queue",
    "rollwise_slack_rate_limited_total",
}
METRIC = re.compile(r"\b(rollwise_[a-z0-9_]+)\b")
MATCHER = re.compile(r'\b([a-z_][a-z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def _rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES_FILE.read_text())["groups"]
            for rule in group["rules"]]


def _dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _dashboard_exprs() -> list[str]:
    return [t["expr"] for p in _panels(_dashboard()["panels"]) for t in p.get("targets", [])]


def _all_exprs() -> list[str]:
    return [r["expr"] for r in _rules()] + _dashboard_exprs()


def _exported() -> set[str]:
    """Series names the controller's registry exposes (labelled metrics included, which
    have no samples until first used)."""
    suffixes = {"counter": ["_total", "_created"], "gauge": [""],
                "histogram": ["_bucket", "_count", "_sum", "_created"],
                "summary": ["", "_count", "_sum", "_created"], "info": ["_info"]}
    return {family.name + suffix for family in Telemetry().registry.collect()
            for suffix in suffixes[family.type]}


@pytest.fixture(scope="module")
def promtool() -> Path:
    found = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(found).is_file():
        pytest.skip("promtool missing: `make test` installs Debian's prometheus package")
    return Path(found)


def _promtool(promtool: Path, *args: str, cwd: Path = ROOT) -> None:
    result = subprocess.run([str(promtool), *args], capture_output=True, text=True,
                            timeout=PROMTOOL_TIMEOUT_S, check=False, cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr


# -- one source of truth ---------------------------------------------------------------


def test_prometheusrule_embeds_exactly_the_rules_file(render: Render) -> None:
    source = RULES_FILE.read_text().splitlines()
    groups = source[source.index("groups:"):]
    expected = "\n".join("  " + line if line else line for line in groups)
    embedded = PROMETHEUS_RULE.read_text().partition("\nspec:\n")[2].rstrip("\n")
    assert embedded == expected, (
        f"{PROMETHEUS_RULE.relative_to(ROOT)} must hold {RULES_FILE.relative_to(ROOT)}'s "
        "groups, indented by two spaces under spec:")
    for overlay in OVERLAYS:
        rule = find(render(DEPLOY / "overlays" / overlay), "PrometheusRule")
        assert rule["spec"] == yaml.safe_load(RULES_FILE.read_text())


# -- the rules themselves --------------------------------------------------------------


def test_rules_pass_promtool_check(promtool: Path, render: Render, tmp_path: Path) -> None:
    _promtool(promtool, "check", "rules", str(RULES_FILE))
    # And what the Prometheus Operator will load, as rendered.
    rendered = find(render(DEPLOY / "overlays" / "prod"), "PrometheusRule")
    (tmp_path / "rendered.yaml").write_text(yaml.safe_dump(rendered["spec"]))
    _promtool(promtool, "check", "rules", str(tmp_path / "rendered.yaml"))


def test_alerts_fire_as_their_runbooks_say(promtool: Path) -> None:
    _promtool(promtool, "test", "rules", ALERT_TESTS.name, cwd=ALERT_TESTS.parent)


def test_every_alert_is_tested() -> None:
    tested = set(re.findall(r"alertname:\s*(\w+)", ALERT_TESTS.read_text()))
    assert {r["alert"] for r in _rules()} <= tested


def test_every_alert_explains_itself_and_links_its_runbook() -> None:
    headings, in_code = [], False
    for line in OPERATIONS.read_text().splitlines():
        in_code ^= line.startswith("```")
        if line.startswith("#") and not in_code:
            headings.append(line.lstrip("#").strip())
    # GitHub's anchors: lower case, punctuation dropped, spaces to hyphens.
    anchors = {re.sub(r"[^\w\- ]", "", h).lower().replace(" ", "-") for h in headings}
    for rule in _rules():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], rule["alert"]
        url, _, anchor = notes["runbook_url"].partition("#")
        assert url.endswith("/docs/operations.md") and anchor in anchors, (
            f"{rule['alert']}: no section #{anchor} in docs/operations.md")


# -- metrics and labels are the controller's ------------------------------------------


def test_every_metric_used_is_one_the_controller_exports() -> None:
    exported = _exported()
    used = {name for expr in _all_exprs() for name in METRIC.findall(expr)}
    unknown = sorted(used - exported - OTHER_MODULES_METRICS)
    assert not unknown, f"not exported by controller.telemetry.Telemetry: {unknown}"
    # The alerts depend on the controller alone.
    alert_metrics = {name for r in _rules() for name in METRIC.findall(r["expr"])}
    assert alert_metrics <= exported


def test_label_values_used_are_ones_the_controller_writes() -> None:
    machine = (ROOT / "controller" / "rollout" / "machine.py").read_text()
    for expr in _all_exprs():
        for label, _, value in MATCHER.findall(expr):
            values = value.split("|")
            if label == "phase":
                assert set(values) <= set(PHASES), expr
            elif label == "quality":
                assert set(values) <= {q.value for q in Quality}, expr
            elif label == "reason":
                for reason in values:
                    assert re.search(rf'Event\([^)]*"{reason}"', machine), (
                        f"{reason}: no such Event reason in controller/rollout/machine.py")
            elif label == "job":
                assert values == ["rollwise-controller"], expr


# -- the dashboard ---------------------------------------------------------------------


def test_dashboard_queries_are_valid_promql(promtool: Path, tmp_path: Path) -> None:
    # promtool parses PromQL in rule files: each query becomes a recording rule, with
    # Grafana's interval variable replaced by a duration.
    rules = [{"record": f"rollwise:dashboard:{i}",
              "expr": expr.replace("$__rate_interval", "5m")}
             for i, expr in enumerate(_dashboard_exprs())]
    (tmp_path / "dashboard.rules.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    _promtool(promtool, "check", "rules", str(tmp_path / "dashboard.rules.yaml"))


def test_dashboard_shows_what_an_sre_looks_for() -> None:
    exprs = "\n".join(_dashboard_exprs())
    for metric in ("rollwise_rollouts", "rollwise_analysis_verdicts_total",
                   "rollwise_transitions_total", "rollwise_analysis_duration_seconds_bucket",
                   "rollwise_reconcile_duration_seconds_bucket",
                   "rollwise_kubernetes_api_errors_total",
                   "rollwise_metric_query_errors_total", "rollwise_leader"):
        assert metric in exprs, metric


def test_dashboard_is_provisioned_by_the_grafana_sidecar(render: Render) -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"]
    ids = [p["id"] for p in _panels(dashboard["panels"])]
    assert len(ids) == len(set(ids))
    for panel in _panels(dashboard["panels"]):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource"]
    config_map = find(render(DEPLOY / "overlays" / "prod"), "ConfigMap", "rollwise-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["rollwise.json"]) == dashboard
