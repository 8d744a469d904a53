"""Generate docs/cli.md from the commands' own --help (checked by a test).

    python -m keel.cli._reference > docs/cli.md
"""

from __future__ import annotations

from typing import Any

import typer.main
from typer.testing import CliRunner

from keel.cli import app


def _walk(cmd: Any, path: list[str]) -> list[list[str]]:
    """Every command path, groups before their subcommands (typer ships its own click)."""
    found = [path]
    for name in sorted(getattr(cmd, "commands", {}) or {}):
        found += _walk(cmd.commands[name], [*path, name])
    return found


def _help(args: list[str]) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], prog_name="keel",
                                env={"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"})
    return "\n".join(line.rstrip() for line in result.output.strip("\n").splitlines())


def reference() -> str:
    root = typer.main.get_command(app)
    lines = ["# keel command reference", "",
             "Generated from each command's `--help` by `python -m keel.cli._reference`.", ""]
    for path in _walk(root, ["keel"]):
        lines += [f"## `{' '.join(path)}`", "", "```text", _help(path[1:]), "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(reference(), end="")
