"""Every command and group, used wrongly, answers with a usage message and exit code 2: never
a traceback. Runs in-process over the whole command tree, so a new command is covered."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer.main

from keel import __version__
from keel.cli import app, main


def _is_group(cmd: Any) -> bool:
    return hasattr(cmd, "commands")  # typer ships its own click: compare by shape


def _walk(cmd: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, cmd
    if _is_group(cmd):
        for name, sub in sorted(cmd.commands.items()):
            yield from _walk(sub, (*path, name))


TREE = list(_walk(typer.main.get_command(app)))
GROUPS = [p for p, c in TREE if _is_group(c)]
LEAVES = [p for p, c in TREE if not _is_group(c)]
NEEDS_ARGS = [p for p, c in TREE if not _is_group(c)
              and any(getattr(x, "required", False) for x in c.params)]


def _ids(paths: list[tuple[str, ...]]) -> list[str]:
    return [" ".join(p) or "keel" for p in paths]


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = main(argv)
    out = capsys.readouterr()
    text = out.out + out.err
    assert code == 2, (argv, code, text)
    assert "Usage: keel" in text, text
    assert "Traceback" not in text
    return text


def test_the_tree_is_walked() -> None:
    assert len(LEAVES) >= 25 and len(GROUPS) >= 6 and ("run",) in NEEDS_ARGS


@pytest.mark.parametrize("path", GROUPS, ids=_ids(GROUPS))
def test_group_without_a_command_or_with_a_bogus_one(path: tuple[str, ...],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    group = dict(TREE)[path]
    if not group.invoke_without_command:  # `keel review` alone is the interactive review
        _usage_error(list(path), capsys)
    assert "No such command" in _usage_error([*path, "no-such-command"], capsys)
    assert "No such option" in _usage_error([*path, "--bogus"], capsys)


@pytest.mark.parametrize("path", LEAVES, ids=_ids(LEAVES))
def test_command_with_a_bogus_flag(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    assert "No such option: --bogus" in _usage_error([*path, "--bogus"], capsys)


@pytest.mark.parametrize("path", NEEDS_ARGS, ids=_ids(NEEDS_ARGS))
def test_command_without_its_arguments(path: tuple[str, ...],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert "Missing" in _usage_error(list(path), capsys)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"keel {__version__}"


def test_flags_show_no_type(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--json" in text and "<bool>" not in text
