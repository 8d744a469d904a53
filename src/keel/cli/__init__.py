"""keel's command line: a thin shell over the Python API (one module per command group).

Start-up: `keel --help` must answer at once (bench/cli_start.py), so the command modules
import only Typer, Rich and keel's lazy front door at the top; a module that pulls in
SQLAlchemy, NumPy, scikit-learn or the server is imported inside the command that needs it,
with a comment pointing here.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

import keel
from keel.cli import alerts as _alerts
from keel.cli import audit as _audit
from keel.cli import calibrate as _calibrate
from keel.cli import cost as _cost
from keel.cli import deliveries as _deliveries
from keel.cli import drift as _drift
from keel.cli import gates as _gates
from keel.cli import inspect as _inspect
from keel.cli import releases as _releases
from keel.cli import review as _review
from keel.cli import run as _run
from keel.cli import serve as _serve
from keel.cli import workers as _workers
from keel.cli._common import console_err, fit_consoles
from keel.errors import KeelError

#: Exit codes: 0 done, 1 a user mistake keel explains (KeelError), 2 a usage mistake (wrong
#: command, option or argument) or some records failed, 3 a check that found a problem.
EXIT_USER_ERROR = 1
#: An error keel did not expect: a bug. The message says how to see the traceback.
EXIT_INTERNAL = 70

__all__ = ["app", "main"]

app = typer.Typer(
    name="keel",
    help="Run an AI prototype as a governed production workflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _show_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"keel {keel.__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", callback=_show_version, is_eager=True,
        help="Print keel's version and exit.")] = False,
) -> None:
    """Run an AI prototype as a governed production workflow."""


for _module in (_run, _inspect, _deliveries, _review, _calibrate, _releases, _gates, _audit,
                _alerts, _drift, _serve, _workers, _cost):
    _module.register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point. Usage mistakes print the usage line and exit 2, a KeelError prints its
    message and exits 1; neither shows a traceback."""
    fit_consoles()
    try:
        app(args=argv, prog_name="keel", standalone_mode=True)
    except SystemExit as exc:
        return _exit_code(exc.code)
    except KeelError as exc:
        console_err.print(f"[bold red]error[/] [dim]({exc.code})[/]: {exc.message}")
        return EXIT_USER_ERROR
    except Exception as exc:
        if os.environ.get("KEEL_DEBUG"):
            raise
        console_err.print(f"[bold red]internal error[/]: {type(exc).__name__}: {exc}\n"
                          "This is a bug in keel. Run again with KEEL_DEBUG=1 to see the "
                          "traceback, and report it with that output.", markup=True)
        return EXIT_INTERNAL
    return 0


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    console_err.print(str(code), markup=False)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
