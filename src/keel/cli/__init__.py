"""keel's command line: a thin shell over the Python API (one module per command group)."""

from __future__ import annotations

import sys

import typer

from keel.cli import alerts as _alerts
from keel.cli import audit as _audit
from keel.cli import calibrate as _calibrate
from keel.cli import deliveries as _deliveries
from keel.cli import drift as _drift
from keel.cli import inspect as _inspect
from keel.cli import review as _review
from keel.cli import run as _run
from keel.cli import serve as _serve
from keel.cli._common import console_err
from keel.errors import KeelError

app = typer.Typer(
    name="keel",
    help="Run an AI prototype as a governed production workflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _module in (_run, _inspect, _deliveries, _review, _calibrate, _audit, _alerts, _drift,
                _serve):
    _module.register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point: a user mistake prints its message (no traceback) and exits 1."""
    try:
        result = app(args=argv, standalone_mode=False)
    except KeelError as exc:
        console_err.print(f"[bold red]error[/] [dim]({exc.code})[/]: {exc.message}")
        return 1
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        console_err.print("aborted")
        return 1
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return 1
        raise
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
