"""`python -m lossbench ARGS` run in this process: the CLI's own code path (lossbench.__main__.cli), without
the seconds a subprocess spends importing. For tests that run many command lines."""

from __future__ import annotations

import contextlib
import io
import sys
from dataclasses import dataclass
from unittest import mock


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str) -> Result:
    """lossbench.__main__.cli() with sys.argv = ['lossbench', *args]; its exit code and output."""
    from lossbench.__main__ import cli
    from lossbench.runs.signals import reset

    reset()  # a fresh process: no stop signal from an earlier test in this one (they raise some on purpose)
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with mock.patch.object(sys, "argv", ["lossbench", *args]), contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        try:
            cli()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return Result(code, out.getvalue(), err.getvalue())
