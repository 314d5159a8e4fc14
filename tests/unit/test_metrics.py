"""Metric helpers count what they say with bounded labels; metric settings fail clearly."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from pipeline import metrics
from pipeline.breakers.events import BreakerTransition
from pipeline.errors import (
    RetriesExhaustedError,
    SettingsError,
    VendorServerError,
    VendorTimeoutError,
)
from pipeline.settings import load_settings


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(
    ("raw", "label"),
    [
        ("SERVER_ERROR", "SERVER_ERROR"),
        ("OperationalError", "OperationalError"),
        ("gave up on crm: https://x/?key=secret", "OTHER"),
        ("", "OTHER"),
        ("A" * 49, "OTHER"),
    ],
)
def test_codes_become_labels_only_when_they_look_like_codes(raw: str, label: str) -> None:
    assert metrics.code_label(raw) == label


def test_a_closed_run_counts_its_outcome_and_each_reason_by_code() -> None:
    before = {
        code: value("pipeline_degraded_reasons_total", kind="export", code=code)
        for code in ("EXPORT_FIELDS_STRIPPED", "EXPORT_REJECTED", "CIRCUIT_OPEN")
    }
    runs_before = value("pipeline_runs_total", kind="export", outcome="degraded")

    metrics.count_closed_run(
        "export",
        "degraded",
        [
            "EXPORT_FIELDS_STRIPPED:website",
            "EXPORT_REJECTED:vat,CIRCUIT_OPEN:erp",
            "EXPORT_FIELDS_STRIPPED:autopost_bills+website",
        ],
    )

    assert value("pipeline_runs_total", kind="export", outcome="degraded") == runs_before + 1
    counted = {
        code: value("pipeline_degraded_reasons_total", kind="export", code=code) - before[code]
        for code in before
    }
    assert counted == {"EXPORT_FIELDS_STRIPPED": 2, "EXPORT_REJECTED": 1, "CIRCUIT_OPEN": 1}


def test_retries_are_counted_by_vendor_and_code_and_calls_by_outcome() -> None:
    retried = value("pipeline_retries_total", vendor="unit-v", code="TIMEOUT")
    metrics.count_retry(VendorTimeoutError("slow", vendor="unit-v"))
    assert value("pipeline_retries_total", vendor="unit-v", code="TIMEOUT") == retried + 1

    exhausted = RetriesExhaustedError(
        "gave up", last_error=VendorServerError("503", vendor="unit-v"), attempts=3
    )
    assert metrics.code_label(exhausted.code) == "RETRIES_EXHAUSTED"

    metrics.observe_vendor_call("unit-v", 0.2, None)
    metrics.observe_vendor_call("unit-v", 0.3, "SERVER_ERROR")
    assert value("pipeline_vendor_calls_total", vendor="unit-v", outcome="ok") >= 1
    assert value("pipeline_vendor_calls_total", vendor="unit-v", outcome="SERVER_ERROR") >= 1
    assert value("pipeline_vendor_call_duration_seconds_count", vendor="unit-v") >= 2


def test_breaker_transitions_are_counted_per_tenant_and_vendor() -> None:
    labels = {"tenant": "41", "vendor": "crm", "from_state": "closed", "to_state": "open"}
    before = value("pipeline_breaker_transitions_total", **labels)
    event = BreakerTransition(41, "crm", "closed", "open", datetime.now(UTC))
    metrics.count_breaker_transition(event)
    assert value("pipeline_breaker_transitions_total", **labels) == before + 1


def test_dead_letters_are_counted_by_task() -> None:
    before = value("pipeline_dead_letters_total", task="tasks.export.export_run")
    metrics.count_dead_letter("tasks.export.export_run")
    assert value("pipeline_dead_letters_total", task="tasks.export.export_run") == before + 1


@pytest.mark.usefixtures("clean_env")
def test_a_metrics_port_without_the_multiprocess_directory_is_refused() -> None:
    with pytest.raises(SettingsError, match="WORKER_METRICS_PORT needs PROMETHEUS_MULTIPROC_DIR"):
        load_settings(worker_metrics_port=9808)
    settings = load_settings(worker_metrics_port=9808, prometheus_multiproc_dir="/tmp/m")
    assert settings.worker_metrics_port == 9808


@pytest.mark.usefixtures("clean_env")
def test_a_flower_password_flower_could_never_match_is_refused_without_showing_it() -> None:
    with pytest.raises(SettingsError, match="FLOWER_PASSWORD: must not contain a comma") as err:
        load_settings(flower_password="s3cret,oops")
    assert "s3cret" not in str(err.value)
    assert load_settings().flower_password is None
