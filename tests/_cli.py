"""Run keel's CLI in this process (no interpreter start-up per command) and read its output."""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass

import pytest

from keel.cli import main


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def keel_cli(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    """``keel ARGS...`` (a single string is split like a shell would).

    The CLI configures keel's logger; it is put back as it was afterwards.
    """
    argv = shlex.split(args[0]) if len(args) == 1 and " " in args[0] else list(args)
    if argv and argv[0] == "keel":
        argv = argv[1:]
    logger = logging.getLogger("keel")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    capsys.readouterr()
    try:
        code = main(argv)
    finally:
        for handler in list(logger.handlers):
            if handler not in handlers:
                logger.removeHandler(handler)
                handler.close()
        logger.setLevel(level)
        logger.propagate = propagate
    out, err = capsys.readouterr()
    return Result(code, out, err)
