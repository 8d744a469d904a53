"""docs/cli.md is generated from --help; it must match the commands as they are."""

from __future__ import annotations

from pathlib import Path

from keel.cli._reference import reference

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def test_cli_reference_is_current() -> None:
    assert DOC.read_text() == reference(), (
        "docs/cli.md is stale: run `python -m keel.cli._reference > docs/cli.md`")
