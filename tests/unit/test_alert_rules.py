"""`deploy/prometheus/alerts.yml` parses as a Prometheus rule file, and every expression
names only metrics (and labels) the product exports."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from pipeline import metrics
from pipeline.breakers.events import BreakerTransition
from pipeline.metrics import breaker_state

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
WANTED_ALERTS = {
    "PipelineBreakerOpen",
    "PipelineDeadLettersGrowing",
    "PipelineVendorErrorRateHigh",
    "PipelineItemsStuck",
    "PipelineReconcilerNotRunning",
}
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
PROMQL_KEYWORDS |= {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def exported_series() -> dict[str, set[str]]:
    """Each series name the product exports (as prometheus-client writes it, suffixes and
    all) with its label names: one sample of every defined metric, plus the breaker gauge."""
    metrics.observe_vendor_call("v", 0.1, None)
    metrics.count_retry(RuntimeError("x"))
    metrics.count_breaker_transition(BreakerTransition(1, "v", "closed", "open", datetime.now(UTC)))
    metrics.count_dead_letter("t")
    metrics.count_closed_run("enrichment", "degraded", ["CRAWL_THIN"])
    metrics.record_reconcile({"enrichment": 1}, {"export": 2}, 1_700_000_000.0)
    metrics.count_healed("enrichment", ["zerobounce"])
    registry = CollectorRegistry()
    for collector in metrics.DEFINED:
        registry.register(collector)
    series: dict[str, set[str]] = {}
    for family in registry.collect():
        assert family.samples, f"{family.name}: no helper touched it"
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    series[breaker_state.NAME] = set(breaker_state.LABELS)
    return series


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    assert set(document) == {"groups"}
    found = []
    for group in document["groups"]:
        assert group["name"] and isinstance(group["rules"], list)
        found.extend(group["rules"])
    return found


def names_in(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords,
    label names (in matchers or grouping clauses), durations or strings."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    found = re.findall(r"(?<![\w.])([A-Za-z_:][\w:]*)\b(?!\s*\()", text)
    return {name for name in found if name.lower() not in PROMQL_KEYWORDS}


def labels_in(expr: str) -> dict[str, set[str]]:
    """Label names each metric is matched on (`metric{label="..."}`)."""
    used: dict[str, set[str]] = {}
    for name, matchers in re.findall(r"([A-Za-z_:][\w:]*)\s*\{([^}]*)\}", expr):
        used.setdefault(name, set()).update(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))
    return used


def grouping_labels_in(expr: str) -> set[str]:
    return {
        label.strip()
        for clause in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr)
        for label in clause.split(",")
        if label.strip()
    }


def test_the_rule_file_has_the_three_alerts_each_with_for_severity_and_annotations() -> None:
    found = rules()
    assert {rule["alert"] for rule in found} == WANTED_ALERTS
    for rule in found:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}
        assert isinstance(rule["expr"], str) and rule["expr"].strip()
        assert re.fullmatch(r"\d+[smhdwy]", str(rule["for"])), rule["for"]
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_every_expression_names_only_exported_metrics_and_their_labels(
    rule: dict[str, Any],
) -> None:
    exported = exported_series()
    named = names_in(rule["expr"])
    assert named, "an expression with no metric in it"
    assert named <= set(exported), f"not exported: {sorted(named - set(exported))}"
    for name, labels in labels_in(rule["expr"]).items():
        assert labels <= exported[name], f"{name} has no label {sorted(labels - exported[name])}"
    available = set().union(*(exported[name] for name in named))
    assert grouping_labels_in(rule["expr"]) <= available


def test_the_expression_reader_sees_through_functions_and_matchers() -> None:
    expr = 'sum by (vendor) (rate(a_total{outcome!="ok"}[5m])) / on(vendor) b > 0.2 and c'
    assert names_in(expr) == {"a_total", "b", "c"}
    assert labels_in(expr) == {"a_total": {"outcome"}}
    assert grouping_labels_in(expr) == {"vendor"}


def test_the_compose_prometheus_loads_these_rules_and_scrapes_the_worker_port() -> None:
    config = yaml.safe_load((RULES.parent / "prometheus.yml").read_text())
    assert [Path(p).name for p in config["rule_files"]] == [RULES.name]
    compose = yaml.safe_load((RULES.parents[2] / "docker-compose.yml").read_text())
    port = compose["services"]["worker"]["environment"]["WORKER_METRICS_PORT"]
    targets = [
        t for job in config["scrape_configs"] for s in job["static_configs"] for t in s["targets"]
    ]
    assert f"worker:{port}" in targets
