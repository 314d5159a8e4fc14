"""What the CLI commands share: exit codes, argument types, printing URLs safely."""

from __future__ import annotations

import argparse

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3


def tenant_id(value: str) -> int:
    """argparse type: a positive integer tenant id, with a message that says so."""
    try:
        tenant = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"tenant must be a positive integer, got {value!r}"
        ) from None
    if not 0 < tenant <= 2**63 - 1:
        raise argparse.ArgumentTypeError(f"tenant must be a positive integer, got {value!r}")
    return tenant


def safe_url(url: str) -> str:
    """A URL fit to print: any password replaced."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]
