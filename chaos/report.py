"""The suite's output: one fixed-width row per scenario, then the summary line

chaos: scenarios=<n> items=<n> lost=<n> duplicates=<n> stuck=<n> healed=<h>/<d>
"""

from __future__ import annotations

from collections.abc import Sequence

from chaos.trial import Row

COLUMNS = (
    ("scenario", 22),
    ("items", 6),
    ("lost", 5),
    ("dups", 5),
    ("stuck", 5),
    ("healed", 9),
    ("time", 8),
    ("result", 6),
)


def header() -> str:
    cells = [
        f"{name:<{width}}" if i == 0 else f"{name:>{width}}"
        for i, (name, width) in enumerate(COLUMNS)
    ]
    return " ".join(cells) + "  notes"


def row_line(row: Row) -> str:
    time = f"{row.seconds:.1f}s" if row.settled else f">{row.seconds:.0f}s"
    values = (
        row.name,
        row.items,
        row.lost,
        row.duplicates,
        row.stuck,
        f"{row.healed}/{row.deferred}",
        time,
        "PASS" if row.passed else "FAIL",
    )
    cells = [
        f"{value:<{width}}" if i == 0 else f"{value!s:>{width}}"
        for i, (value, (_, width)) in enumerate(zip(values, COLUMNS, strict=True))
    ]
    notes = "; ".join([*(f"FAIL: {f}" for f in row.failures), *row.notes])
    return " ".join(cells) + (f"  {notes}" if notes else "")


def summary(rows: Sequence[Row]) -> str:
    return (
        f"chaos: scenarios={len(rows)} items={sum(r.items for r in rows)} "
        f"lost={sum(r.lost for r in rows)} duplicates={sum(r.duplicates for r in rows)} "
        f"stuck={sum(r.stuck for r in rows)} "
        f"healed={sum(r.healed for r in rows)}/{sum(r.deferred for r in rows)}"
    )
