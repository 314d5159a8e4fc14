"""Companies from a CSV file, for `pipeline enrich --file`.

The header names the columns (`id`, `name`, `domain`, any case, any order). A row with an
`id` names a company the tenant has; otherwise its name and domain are given, trimmed. A
row whose name and domain are both blank is kept: the core makes it an item that fails
with `DATA_EMPTY:no_domain_name`, so it shows in the run like any other outcome. Every
error names the file, line and column — never the cell's content.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from pipeline.errors import InputError

CSV_COLUMNS = ("id", "name", "domain")
MAX_ID = 2**63 - 1
MAX_CELL = 255  # what the companies table stores; the core checks it too


def read_companies(path: Path) -> list[int | dict[str, Any]]:
    """The companies in `path`, in file order; `InputError` naming what is wrong."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, strict=True)  # an unclosed quote is an error
            header = next(reader, None)
            columns = [c.strip().lower() for c in header or []]
            if not columns:
                raise InputError(f"{path}: the file is empty")
            unknown = [c for c in columns if c not in CSV_COLUMNS]
            if unknown:
                shown = ", ".join(c for c in unknown if c.isascii() and c.isprintable())[:80]
                raise InputError(
                    f"{path}: unknown columns {shown or '(unprintable)'} "
                    f"(expected {', '.join(CSV_COLUMNS)})"
                )
            if len(set(columns)) != len(columns):
                raise InputError(f"{path}: a column is named twice in the header")
            companies = [
                company
                for company in (_company(path, reader.line_num, columns, row) for row in reader)
                if company is not None
            ]
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text (save it as UTF-8 CSV)") from None
    except csv.Error as exc:
        raise InputError(f"{path}: not a CSV file ({exc})") from None
    if not companies:
        raise InputError(f"{path}: no companies (a header but no rows)")
    return companies


def _company(
    path: Path, line: int, columns: list[str], row: list[str]
) -> int | dict[str, Any] | None:
    """One row as an id or a name/domain dict; None for a blank line."""
    if not row:
        return None
    if len(row) > len(columns):
        raise InputError(f"{path}, line {line}: {len(row)} cells, the header has {len(columns)}")
    cells = dict(zip(columns, (cell.strip() for cell in row), strict=False))
    for column, cell in cells.items():
        if "\x00" in cell:
            raise InputError(f"{path}, line {line}, column {column}: contains a NUL character")
        if len(cell) > MAX_CELL:
            raise InputError(f"{path}, line {line}, column {column}: longer than {MAX_CELL}")
    ident = cells.get("id", "")
    if ident:
        if not (ident.isascii() and ident.isdigit()) or not 0 < int(ident) <= MAX_ID:
            raise InputError(f"{path}, line {line}: id must be an integer from 1 to {MAX_ID}")
        return int(ident)
    return {"name": cells.get("name", ""), "domain": cells.get("domain", "")}
