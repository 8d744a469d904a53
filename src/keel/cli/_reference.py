"""Generate docs/cli.md, the command reference, from the commands themselves (checked by a test).

    python -m keel.cli._reference > docs/cli.md

Each command gets its usage line, its help text and a table of its arguments and options, read
from the same objects `--help` prints, so the reference cannot drift from the CLI.
"""

from __future__ import annotations

from typing import Any

import typer.main

from keel.cli import app


def _walk(cmd: Any, path: list[str]) -> list[tuple[list[str], Any]]:
    """Every command path, groups before their subcommands (typer ships its own click)."""
    found = [(path, cmd)]
    for name in sorted(getattr(cmd, "commands", {}) or {}):
        found += _walk(cmd.commands[name], [*path, name])
    return found


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _param_row(param: Any, ctx: Any) -> str | None:
    record = param.get_help_record(ctx)
    if record is None:
        return None
    names, help_text = record
    if param.param_type_name == "argument":
        names = (param.metavar or param.name or "").strip("{}").upper()
        required = "required" if param.required else "optional"
        help_text = f"{getattr(param, 'help', None) or ''} ({required})".strip()
    return f"| `{_cell(names)}` | {_cell(help_text)} |"


def _section(path: list[str], cmd: Any, parent: Any) -> list[str]:
    ctx = typer.main.get_command(app).make_context("keel", [], resilient_parsing=True) \
        if parent is None else parent
    info_name = path[-1]
    sub_ctx = cmd.make_context(info_name, [], parent=ctx, resilient_parsing=True)
    usage = " ".join(cmd.collect_usage_pieces(sub_ctx))
    lines = [f"## `{' '.join(path)}`", "", f"`{' '.join(path)} {usage}`".rstrip(), ""]
    if cmd.help:
        lines += [" ".join(p.split()) for p in cmd.help.split("\n\n")]
        lines = [*lines[:-1], lines[-1], ""] if lines[-1] else lines
        lines += [""] if lines[-1] else []
    rows = [r for p in cmd.get_params(sub_ctx) if (r := _param_row(p, sub_ctx)) is not None]
    if rows:
        lines += ["| argument or option | what it does |", "|---|---|", *rows, ""]
    subs = sorted(getattr(cmd, "commands", {}) or {})
    if subs:
        lines += ["Commands: " + ", ".join(f"`{s}`" for s in subs), ""]
    return lines


def reference() -> str:
    root = typer.main.get_command(app)
    lines = ["# keel command reference", "",
             "Generated from the commands themselves by `python -m keel.cli._reference` "
             "(a test checks it is current). `keel COMMAND --help` prints the same.", ""]
    for path, cmd in _walk(root, ["keel"]):
        lines += _section(path, cmd, None)
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    print(reference(), end="")
