"""The report at the end of `pipeline demo`: each tenant's runs (full ids) with their
outcomes, why items degraded, calls that reached each vendor, breaker transitions — and
the verdict: tenant B never saw tenant A's outage (`CIRCUIT_OPEN`)."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

from rich.console import Console
from rich.table import Table

from pipeline.cli.common import EXIT_FAILED, EXIT_OK


def report(
    console: Console,
    sim: Any,
    tenants: dict[str, int],
    run_ids: dict[str, uuid.UUID],
    stages: dict[str, list[Any]],
    took: float,
) -> int:
    """Print the report; exit code 1 if tenant B saw a CIRCUIT_OPEN (isolation broken)."""
    from pipeline.db.breaker_events import breaker_events
    from pipeline.runs import get_run

    stats = sim.stats()
    outcome = Table(
        "tenant",
        "status",
        "succeeded",
        "degraded",
        "failed",
        title="runs",
        title_justify="left",
    )
    why = Table(
        "tenant",
        "degradation reason",
        "items",
        title="why items are degraded",
        title_justify="left",
    )
    vendor_calls = Table(
        "tenant",
        *sorted(stats["calls"]),
        title="calls that reached each vendor",
        title_justify="left",
    )
    transitions = Table(
        "tenant", "vendor", "from", "to", "at", title="breaker transitions", title_justify="left"
    )
    circuit_open_for_b = 0
    ids: list[str] = []  # full run ids, below the table: too wide for a column of it
    for label, tenant in tenants.items():
        view = get_run(run_ids[label])
        if view is None:
            raise RuntimeError(f"run {run_ids[label]} vanished")
        reasons = Counter(r for i in view.items for r in i.degraded_reasons.split(",") if r)
        if label == "B":
            circuit_open_for_b = sum(n for r, n in reasons.items() if r.startswith("CIRCUIT_OPEN"))
        ids.append(f"{label} ({tenant}) {view.run.kind}: {view.run.id}")
        outcome.add_row(
            f"{label} ({tenant})",
            view.run.status,
            str(view.run.items_succeeded),
            str(view.run.items_degraded),
            str(view.run.items_failed),
        )
        for reason, n in reasons.most_common():
            why.add_row(label, reason, str(n))
        for stage in sorted(stages.get(label, []), key=lambda r: r.created_at):
            ids.append(f"{label} ({tenant}) {stage.kind}: {stage.id}")
            outcome.add_row(
                f"{label} → {stage.kind}",
                stage.status + (" (export disabled)" if stage.export_disabled else ""),
                str(stage.items_succeeded),
                str(stage.items_degraded),
                str(stage.items_failed),
            )
        vendor_calls.add_row(
            label, *(str(stats["calls"][v].get(str(tenant), 0)) for v in sorted(stats["calls"]))
        )
        for event in breaker_events(tenant):
            transitions.add_row(
                label,
                event.vendor,
                event.from_state,
                event.to_state,
                event.at.strftime("%H:%M:%S.%f")[:-3],
            )
    console.print(outcome)
    console.print("run ids (`pipeline runs show ID`):\n" + "\n".join(f"  {line}" for line in ids))
    for table in (why, vendor_calls, transitions):
        console.print(table)
    console.print(f"time taken: {took:.1f}s for {sum(1 for _ in tenants)} runs")
    if circuit_open_for_b:
        console.print(
            f"[red]tenant B has {circuit_open_for_b} CIRCUIT_OPEN reasons: isolation broken[/red]"
        )
        return EXIT_FAILED
    console.print(
        "[green]tenant B: no CIRCUIT_OPEN — tenant A's outage stayed with tenant A[/green]"
    )
    return EXIT_OK
