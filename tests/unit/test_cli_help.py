"""Every command the CLI has explains itself: help text, an example, every option helped."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest

from pipeline.cli import cli, main


def every_command(
    group: click.Group = cli, path: str = "pipeline"
) -> Iterator[tuple[str, click.Command]]:
    for name, command in group.commands.items():
        where = f"{path} {name}"
        yield where, command
        if isinstance(command, click.Group):
            yield from every_command(command, where)


def test_every_command_has_help_and_an_example_of_itself() -> None:
    commands = dict(every_command())
    assert {
        "pipeline sync",
        "pipeline export",
        "pipeline runs list",
        "pipeline simulator fault set",
    } <= set(commands)
    for where, command in commands.items():
        assert command.help, f"{where} has no help text"
        assert command.epilog and "Example" in command.epilog, f"{where} has no example"
        assert where in command.epilog, f"{where}'s example is of another command"


def test_every_option_and_argument_is_explained() -> None:
    for where, command in every_command():
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{where} {param.opts[0]} has no help text"
            else:  # arguments are named in the command's help
                assert param.name and command.help, where


def test_a_time_limit_must_be_a_finite_number_of_seconds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`nan` passes `x > 0` checks and never compares past a deadline: it waited forever."""
    for args in (
        ["check", "--wait", "nan"],
        ["check", "--wait", "inf"],
        ["sync", "--tenant", "7", "--run", "0123abcd", "--timeout", "nan"],
        ["export", "--tenant", "7", "--run", "0123abcd", "--timeout", "Infinity"],
        ["enrich", "--tenant", "7", "--file", "x.csv", "--timeout", "NaN"],
        ["demo", "--timeout", "nan"],
    ):
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert "a number of seconds over 0" in err, (args, err)
        assert err.count("\n") == 1
