"""The ``dsa110`` command (also ``python -m dsa110_assets``).

Each subcommand is a thin shell over the library: parse arguments, call one function, print.
One module per command family (``simulate``, ``normalize``, ``db``, ``query``, ``mosaic``,
``backfill``, ``reprocess``, ``catalog``), the validated argument types in
:mod:`~dsa110_assets.cli.arguments`, the parser in :mod:`~dsa110_assets.cli.parser`. Errors
are one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Sequence

from dsa110_assets.catalogs.survey import DEFAULT_STRIP_WIDTH_DEG, MIN_STRIP_WIDTH_DEG, SURVEYS
from dsa110_assets.cli.arguments import (
    N_DATA_ANTENNAS,
    int_list_arg,
    iso_date_arg,
    iso_time_arg,
    number_arg,
)
from dsa110_assets.cli.common import EXIT_ERROR, CommandError
from dsa110_assets.cli.display import QuietStdout, display_name
from dsa110_assets.cli.parser import build_parser
from dsa110_assets.errors import PipelineError

__all__ = [
    "DEFAULT_STRIP_WIDTH_DEG",
    "EXIT_ERROR",
    "MIN_STRIP_WIDTH_DEG",
    "N_DATA_ANTENNAS",
    "SURVEYS",
    "CommandError",
    "build_parser",
    "display_name",
    "int_list_arg",
    "iso_date_arg",
    "iso_time_arg",
    "main",
    "number_arg",
]

#: Failures the command expects and explains in one line; anything else is a bug, reported
#: with its type (and, with ``DSA110_DEBUG=1``, its traceback).
EXPECTED_ERRORS = (PipelineError, ValueError, OSError, sqlite3.Error)


def _error_line(command: str, exc: BaseException) -> str:
    """Return the one line ``dsa110 COMMAND: error: ...`` for ``exc``, names escaped."""
    message = str(exc) or type(exc).__name__
    if not isinstance(exc, EXPECTED_ERRORS):
        message = f"{type(exc).__name__}: {message} (set DSA110_DEBUG=1 for a traceback)"
    # One line, whatever the message quotes (file names, catalog values).
    return f"dsa110 {command}: error: {display_name(message)}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``dsa110`` command line; return its exit status.

    Parameters
    ----------
    argv
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 1 on an error (one line on stderr), 130 when interrupted; a usage
        error exits 2 from the parser.
    """
    args = build_parser().parse_args(argv)
    stdout, quiet = sys.stdout, QuietStdout(sys.stdout)
    sys.stdout = quiet
    try:
        status = int(args.func(args) or 0)
        quiet.flush()  # inside the guard: a reader that left early is not an error
        return status
    except KeyboardInterrupt:
        print(f"dsa110 {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("DSA110_DEBUG"):
            raise
        print(_error_line(args.command, exc), file=sys.stderr)
        return EXIT_ERROR
    finally:
        sys.stdout = stdout
