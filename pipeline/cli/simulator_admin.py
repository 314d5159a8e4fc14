"""How the simulator commands reach a running simulator: its admin API at `--url` (default
VENDOR_BASE_URL), its refusals and its absence turned into errors that say what to do."""

from __future__ import annotations

from typing import Any

import click

from pipeline.errors import DependencyUnavailableError, InputError


def url_option(command: Any) -> Any:
    return click.option(
        "--url",
        metavar="URL",
        help="The simulator's base URL (default: VENDOR_BASE_URL).",
    )(command)


def call_simulator(url: str | None, action: Any) -> Any:
    """`action(admin)` against the simulator at `url`; its refusals and absence as errors
    that say what to do."""
    import requests

    from pipeline.settings import get_settings
    from pipeline.simulator import SimulatorAdmin

    base = url or get_settings().vendor_base_url
    admin = SimulatorAdmin(base)
    try:
        return action(admin)
    except requests.HTTPError as exc:
        answer = exc.response
        message = message_of(answer) if answer is not None else ""
        raise InputError(f"the simulator refused: {message[:300]}") from None
    except requests.RequestException as exc:
        raise DependencyUnavailableError(
            f"no simulator answers at --url/VENDOR_BASE_URL ({type(exc).__name__}); start "
            "one: pipeline simulator --port 8700"
        ) from None
    finally:
        admin.close()


def message_of(answer: Any) -> str:
    try:
        body = answer.json()
    except ValueError:
        return f"HTTP {answer.status_code}"
    return f"HTTP {answer.status_code}: {body.get('message') or body.get('error') or ''}"
