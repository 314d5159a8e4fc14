"""README's walkthrough as data: the shell commands of chosen sections, in order.

The walkthrough test runs exactly what README shows, so the two cannot drift. Every ```sh
block of a walkthrough section is part of it; a command ends where bash says it is
complete (`bash -n`), so continuation lines and quotes spanning lines need no rules of our
own. A command's expected exit code is 0 unless its last line ends with `# exit N`; one
ending in `&` runs in the background for the rest of the walkthrough.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

EXIT_COMMENT = re.compile(r"#\s*exit\s+(\d+)\b[^\n]*$")
BACKGROUND = re.compile(r"&\s*(#[^\n]*)?$")
FENCE = re.compile(r"^```(\S*)\s*$")


@dataclass(frozen=True)
class Command:
    section: str
    text: str
    exit_code: int
    background: bool

    @property
    def first_line(self) -> str:
        return self.text.splitlines()[0]


def sections(markdown: str) -> dict[str, str]:
    """`## Heading` → its text, down to the next `## ` heading (### stay inside)."""
    found: dict[str, str] = {}
    name, lines = None, []  # type: tuple[str | None, list[str]]
    in_fence = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        if not in_fence and line.startswith("## "):
            if name is not None:
                found[name] = "\n".join(lines)
            name, lines = line[3:].strip(), []
            continue
        lines.append(line)
    if name is not None:
        found[name] = "\n".join(lines)
    return found


def shell_blocks(section_text: str) -> list[str]:
    """The bodies of the section's ```sh fences, in order (other fences are skipped)."""
    blocks: list[str] = []
    body: list[str] | None = None
    language = None
    for line in section_text.splitlines():
        fence = FENCE.match(line)
        if fence and language is None:
            language, body = fence.group(1), []
        elif line.startswith("```") and language is not None:
            if language == "sh" and body is not None:
                blocks.append("\n".join(body))
            language, body = None, None
        elif body is not None:
            body.append(line)
    return blocks


def is_complete(text: str) -> bool:
    """Whether bash would run `text` as it stands (no open quote, no trailing `\\`)."""
    if text.rstrip().endswith("\\"):
        return False
    check = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
    return check.returncode == 0


def commands(block: str, section: str) -> list[Command]:
    found: list[Command] = []
    pending: list[str] = []
    for line in block.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue  # a blank line or a comment between commands
        pending.append(line)
        text = "\n".join(pending)
        if not is_complete(text):
            continue
        last = pending[-1]
        expected = EXIT_COMMENT.search(last)
        found.append(
            Command(
                section=section,
                text=text,
                exit_code=int(expected.group(1)) if expected else 0,
                background=bool(BACKGROUND.search(_without_comment(last))),
            )
        )
        pending = []
    if pending:
        raise ValueError(f"README section {section!r}: incomplete command {pending[0]!r}")
    return found


def _without_comment(line: str) -> str:
    """The line without a trailing `# ...` comment (one outside quotes, as README writes)."""
    return re.sub(r"\s+#[^'\"]*$", "", line)


def walkthrough(readme: Path, names: tuple[str, ...]) -> list[Command]:
    all_sections = sections(readme.read_text(encoding="utf-8"))
    missing = [name for name in names if name not in all_sections]
    if missing:
        raise ValueError(f"README has no section {missing}")
    return [
        command
        for name in names
        for block in shell_blocks(all_sections[name])
        for command in commands(block, name)
    ]


@dataclass(frozen=True)
class Outcome:
    command: Command
    exit_code: int
    output: str


EXPORT_LINE = re.compile(r"^(\s*export\s+)([A-Z_][A-Z0-9_]*)=(.*)$")


def with_overrides(command: Command, values: dict[str, str]) -> Command:
    """The command with each `export NAME=...` of a NAME in `values` set to our value
    instead: README's values name a machine, the test's its private stack."""
    lines = []
    for line in command.text.splitlines():
        match = EXPORT_LINE.match(line)
        if match and match.group(2) in values:
            line = f"{match.group(1)}{match.group(2)}={shlex.quote(values[match.group(2)])}"
        lines.append(line)
    return Command(command.section, "\n".join(lines), command.exit_code, command.background)


def script(commands: list[Command], workdir: Path) -> str:
    """One bash script running the commands in order in one shell (so `export` carries
    over), each command's output in its own file, stopping at the first unexpected exit."""
    parts = ["exec 3>" + shlex.quote(str(workdir / "exit_codes"))]
    for number, command in enumerate(commands):
        out = shlex.quote(str(workdir / f"{number}.out"))
        parts.append(
            f"{{ {command.text}\n}} >{out} 2>&1 </dev/null\n"
            f'__rc=$?; echo "{number} $__rc" >&3\n'
            f"[ $__rc -eq {0 if command.background else command.exit_code} ] || exit 97"
        )
    return "\n".join(parts) + "\n"


def run(
    commands: list[Command], *, cwd: Path, env: dict[str, str], workdir: Path, timeout: float
) -> list[Outcome]:
    """Run the commands as README's reader would, in one shell; every process it started
    (background ones included, same process group) is ended afterwards."""
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        ["bash", "-c", script(commands, workdir)], cwd=cwd, env=env, start_new_session=True
    )
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    finally:
        _end_group(proc)
    outcomes = []
    for line in (workdir / "exit_codes").read_text().splitlines():
        number, code = (int(field) for field in line.split())
        output = (workdir / f"{number}.out").read_text(errors="replace")
        outcomes.append(Outcome(commands[number], code, output))
    return outcomes


def _end_group(proc: subprocess.Popen[bytes]) -> None:
    for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
