"""Every command the CLI has explains itself: help text, an example, every option helped."""

from __future__ import annotations

from collections.abc import Iterator

import click

from pipeline.cli import cli


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
