"""How runs look in a terminal (rich): used by `pipeline runs show` and `enrich|sync|export --wait`.

A run of hundreds of items stays readable: what healed, what is deferred and what was
re-driven are counted in the summary; per-item detail is shown only for items that healed
or were re-driven, at most `DETAIL_ROWS` of each ("and N more")."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from rich.console import Console, Group
from rich.table import Column, Table
from rich.text import Text

from pipeline.db.models import DeferralStatus, RunItem
from pipeline.run_details import RunDetails, heals, public_history, redrives_in
from pipeline.runs import RunView

PIPED_WIDTH = 160  # a table written to a file or a pipe: no terminal to fit, keep ids whole


def console() -> Console:
    """A console as wide as the terminal; into a pipe or file, wide enough that a table of
    runs keeps its full ids and reasons (rich would assume 80 columns)."""
    probe = Console()
    return probe if probe.is_terminal else Console(width=PIPED_WIDTH)


STATUS_STYLE = {"succeeded": "green", "degraded": "yellow", "failed": "red", "dead": "red"}
DETAIL_ROWS = 20


def run_summary(details: RunDetails) -> Text:
    view = details.view
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
    text.append(aftercare_summary(details))
    if run.parent_run_id:
        text.append(f"\nfollows run {run.parent_run_id}")
    if run.started_at and run.finished_at:
        text.append(f"\ntook {(run.finished_at - run.started_at).total_seconds():.1f}s")
    return text


def reason_counts(view: RunView) -> Table | Text:
    counts = Counter(
        reason for item in view.items for reason in item.degraded_reasons.split(",") if reason
    )
    if not counts:
        return Text("degradation reasons: none")
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


def aftercare_summary(details: RunDetails) -> Text:
    """Lines for what healed, what is deferred, what was re-driven (none: no lines)."""
    text = Text()
    healed = details.healed_items
    if healed:
        last = when(details.last_healed_at)
        text.append(f"\nhealed: {_count(len(healed), 'item')}, last at {last}")
    counts = details.deferral_counts
    if any(counts.values()):
        text.append("\ndeferred: " + ", ".join(f"{counts[s]} {s}" for s in DeferralStatus))
        live = [d for waits in details.deferred.values() for d in waits]
        if live:
            by_vendor = sorted(
                Counter(d.vendor for d in live).items(), key=lambda vn: (-vn[1], vn[0])
            )
            vendors = ", ".join(f"{vendor} {n}" for vendor, n in by_vendor)
            next_try = when(min(d.next_try_at for d in live))
            text.append(f"\n  still open: {vendors}; next try {next_try}")
    redriven = details.redriven_items
    if redriven:
        times = sum(_redrive_count(item) for item in redriven)
        text.append(f"\nre-driven: {_count(len(redriven), 'item')}, {_count(times, 'time')}")
    return text


def items_table(details: RunDetails) -> Table:
    waiting = bool(details.deferred)
    columns: list[Column | str] = [_key_column(), "status", "attempts", "last error", "reasons"]
    table = Table(*columns, *(["waiting for"] if waiting else []), title="items")
    table.title_justify = "left"
    for item in details.view.items:
        status = Text(item.status, style=STATUS_STYLE.get(item.status, ""))
        if item.healed_at is not None:
            status.append(" healed", style="dim")
        row: list[Text | str] = [
            Text(item.item_key),
            status,
            str(item.attempts),
            item.last_error_code or "",
            Text(", ".join(_reasons(item))),
        ]
        if waiting:
            row.append(Text(", ".join(d.vendor for d in details.deferred.get(item.id, []))))
        table.add_row(*row)
    return table


def healed_table(details: RunDetails) -> list[Table | Text]:
    """Items that healed, the latest first: when, what they were before, which vendors'
    work was redone, what they are now."""
    healed = details.healed_items
    if not healed:
        return []
    table = Table(
        _key_column(), _time_column("healed at"), "was", "redone", "now", title="healed items"
    )
    table.title_justify = "left"
    for item in healed[:DETAIL_ROWS]:
        found = heals(public_history(item.history))
        first = found[0] if found else None
        was = _outcome(first.was_status, first.was_reasons) if first and first.was_status else ""
        redone = ", ".join(dict.fromkeys(v for heal in found for v in heal.vendors))
        table.add_row(
            Text(item.item_key),
            moment(item.healed_at),
            Text(was or "(not in its history)"),
            Text(redone + (f" ({len(found)} heals)" if len(found) > 1 else "")),
            Text(_outcome(item.status, _reasons(item))),
        )
    return [table, *_more(len(healed), "healed items")]


def redriven_table(details: RunDetails) -> list[Table | Text]:
    """Items whose lost work the reconciler re-sent: how often, the last time and why."""
    redriven = details.redriven_items
    if not redriven:
        return []
    table = Table(
        _key_column(), "times", _time_column("last"), "why", "from step", title="re-driven items"
    )
    table.title_justify = "left"
    for item in redriven[:DETAIL_ROWS]:
        events = redrives_in(public_history(item.history))
        last = events[-1] if events else {}
        table.add_row(
            Text(item.item_key),
            str(_redrive_count(item)),
            moment(last.get("at")),
            Text(last.get("why") or ""),
            Text(last.get("step") or ""),
        )
    return [table, *_more(len(redriven), "re-driven items")]


def run_details(details: RunDetails, *, with_items: bool = True) -> Group:
    view = details.view
    parts: list[Text | Table] = [run_summary(details), reason_counts(view), vendor_table(view)]
    if with_items:
        parts.append(items_table(details))
    parts += healed_table(details) + redriven_table(details)
    return Group(*parts)


def when(at: datetime | None) -> str:
    """A moment in UTC, to the second, saying so."""
    return f"{moment(at)} UTC" if at is not None else "?"


def moment(at: datetime | None) -> str:
    """A moment in UTC, to the second (in a column that says UTC)."""
    if at is None:
        return "?"
    aware = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _key_column() -> Column:
    return Column("item", no_wrap=True)


def _time_column(name: str) -> Column:
    return Column(f"{name} (UTC)", no_wrap=True)


def _reasons(item: RunItem) -> list[str]:
    return [r for r in item.degraded_reasons.split(",") if r]


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _outcome(status: str, reasons: list[str]) -> str:
    shown = ", ".join(r for r in reasons if r)
    return f"{status}: {shown}" if shown else status


def _redrive_count(item: RunItem) -> int:
    """Its re-drives: the count, or its history's (a replay resets the count)."""
    return max(item.redrives, len(redrives_in(public_history(item.history))))


def _more(total: int, what: str) -> list[Text]:
    if total <= DETAIL_ROWS:
        return []
    return [Text(f"... and {total - DETAIL_ROWS} more {what} (GET /runs/{{id}} lists each)")]
