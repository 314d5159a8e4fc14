"""How runs look in a terminal (rich): used by `pipeline runs show`, `enrich --wait`, `demo`."""

from __future__ import annotations

from collections import Counter

from rich.console import Group
from rich.table import Table
from rich.text import Text

from pipeline.runs import RunView

STATUS_STYLE = {"succeeded": "green", "degraded": "yellow", "failed": "red", "dead": "red"}


def run_summary(view: RunView) -> Text:
    run = view.run
    text = Text()
    text.append(f"run {run.id}  {run.kind}  tenant {run.tenant_id}  ")
    text.append(run.status, style=STATUS_STYLE.get(run.status, "bold"))
    text.append(
        f"\n{run.items_total} items: {run.items_succeeded} succeeded, "
        f"{run.items_degraded} degraded, {run.items_failed} failed, {run.items_dead} dead"
    )
    if run.degraded_reasons:
        text.append(f"\nreasons: {run.degraded_reasons}")
    if view.recovered:
        text.append(f"\nrecovered one by one after a batch rejected them: {view.recovered}")
    if run.export_disabled:
        text.append(f"\nexport disabled: {run.export_disabled_reason}")
    if run.parent_run_id:
        text.append(f"\nfollows run {run.parent_run_id}")
    if run.started_at and run.finished_at:
        text.append(f"\ntook {(run.finished_at - run.started_at).total_seconds():.1f}s")
    return text


def reason_counts(view: RunView) -> Table:
    counts = Counter(
        reason for item in view.items for reason in item.degraded_reasons.split(",") if reason
    )
    table = Table("reason", "items", title="degradation reasons", title_justify="left")
    for reason, n in counts.most_common():
        table.add_row(reason, str(n))
    return table


def vendor_table(view: RunView) -> Table:
    table = Table(
        "vendor", "calls", "errors", "p50 ms", "p95 ms", title="vendor calls", title_justify="left"
    )
    for vendor, stats in view.run.vendor_stats.items():
        table.add_row(
            vendor,
            str(stats["calls"]),
            str(stats["errors"]),
            f"{stats['p50_ms']:.1f}",
            f"{stats['p95_ms']:.1f}",
        )
    return table


def items_table(view: RunView) -> Table:
    table = Table(
        "item", "status", "attempts", "last error", "reasons", title="items", title_justify="left"
    )
    for item in view.items:
        table.add_row(
            item.item_key,
            Text(item.status, style=STATUS_STYLE.get(item.status, "")),
            str(item.attempts),
            item.last_error_code or "",
            item.degraded_reasons,
        )
    return table


def run_details(view: RunView, *, with_items: bool = True) -> Group:
    parts: list[Text | Table] = [run_summary(view), reason_counts(view), vendor_table(view)]
    if with_items:
        parts.append(items_table(view))
    return Group(*parts)
