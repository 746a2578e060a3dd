"""Validated arguments: every number and time the command takes, and the parser class.

Every number and time goes through one of these argparse types, so a bad value is a one-line
usage error before anything runs (numbers: :func:`dsa110_assets.settings.parse_number`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any, NoReturn

from dsa110_assets.cli.display import display_name
from dsa110_assets.settings import NumberRule, parse_number

# Ranges of the options that are not settings (those use the settings' own rules). The
# antenna limit is instrument.N_DATA_ANTENNAS, not imported (astropy and scipy, 1.7 s on
# every command's start; a test checks the two agree).
N_DATA_ANTENNAS = 96
GROUPS_RULE = NumberRule(int, 1, 10_000)
DEC_RULE = NumberRule(float, -90.0, 90.0)
RA_RULE = NumberRule(float, 0.0, 360.0)
INTERVAL_RULE = NumberRule(float, 0.0, 86_400.0)
ANTENNAS_RULE = NumberRule(int, 2, N_DATA_ANTENNAS)
CHANNELS_RULE = NumberRule(int, 1, 4096)
SEED_RULE = NumberRule(int, 0, 2**32 - 1)
SOURCES_RULE = NumberRule(int, 0, 100_000)
GROUP_INDEX_RULE = NumberRule(int, 0, 9_999)
PB_CUTOFF_RULE = NumberRule(float, 0.0, 1.0, low_open=True, high_open=True)
RADIUS_RULE = NumberRule(float, 0.0, 180.0, low_open=True)
FLUX_RULE = NumberRule(float, 0.0)
LIMIT_RULE = NumberRule(int, 0)


def number_arg(rule: NumberRule) -> Callable[[str], int | float]:
    """Return an argparse ``type`` accepting only what ``rule`` allows (finite, in range, ASCII).

    Parameters
    ----------
    rule
        The kind and range of the number.

    Returns
    -------
    Callable
        A parser of one argument that raises :class:`argparse.ArgumentTypeError`.
    """

    def parse(text: str) -> int | float:
        try:
            return parse_number(text, rule)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = "integer" if rule.kind is int else "number"
    return parse


def int_list_arg(rule: NumberRule) -> Callable[[str], tuple[int, ...]]:
    """Return an argparse ``type`` for a comma-separated list of integers, each held to ``rule``."""

    def parse(text: str) -> tuple[int, ...]:
        try:
            return tuple(int(parse_number(p, rule)) for p in text.split(",") if p.strip())
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"in {text!r}: {exc}") from None

    parse.__name__ = "integer list"
    return parse


def iso_time_arg(text: str) -> datetime:
    """Return an ISO 8601 time as an aware UTC datetime.

    An offset is honoured (converted to UTC); a time without one is UTC. Non-ASCII digits and
    times outside years 1..9999 are refused.

    Raises
    ------
    argparse.ArgumentTypeError
        When ``text`` is not such a time.
    """
    try:
        if not text.isascii():
            raise ValueError
        moment = datetime.fromisoformat(text.strip())
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO time (YYYY-MM-DDTHH:MM:SS, optionally with Z or +HH:MM)"
        ) from None


def iso_date_arg(text: str) -> date:
    """Return an ISO calendar date, ``YYYY-MM-DD`` (ASCII digits)."""
    try:
        if not text.isascii():
            raise ValueError
        return date.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def group_id_arg(text: str) -> str:
    """Return a canonical group_id, ``YYYY-MM-DDTHH:MM:SS`` (ASCII digits, a real time)."""
    from dsa110_assets.naming import validate_group_id

    try:
        return validate_group_id(text.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def utc_naive_iso(moment: datetime) -> str:
    """Return the UTC wall time of ``moment`` without an offset, as group ids are written."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat()


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (the usage is one ``--help`` away), names escaped."""

    def error(self, message: str) -> NoReturn:
        """Exit with status 2 and a one-line message naming ``--help``."""
        self.exit(2, f"{self.prog}: error: {display_name(message)} (see {self.prog} --help)\n")


def add_command(
    sub: Any,
    name: str,
    func: Callable[[argparse.Namespace], int] | None,
    help: str,
    description: str | None = None,
) -> argparse.ArgumentParser:
    """Add subcommand ``name`` to ``sub`` (a subparsers action), run by ``func``.

    Every subcommand is declared the same way; this is that way once.

    Returns
    -------
    argparse.ArgumentParser
        The subcommand's parser, for its arguments.
    """
    parser = sub.add_parser(name, help=help, description=description)
    if func is not None:
        parser.set_defaults(func=func)
    return parser


def add_actions(parser: argparse.ArgumentParser, dest: str, metavar: str) -> Any:
    """Return the (required) subparsers action of a command family such as ``db``."""
    return parser.add_subparsers(dest=dest, required=True, metavar=metavar)


def add_number(
    parser: argparse.ArgumentParser, name: str, rule: NumberRule, help: str, **options: Any
) -> None:
    """Add an argument ``name`` whose value is a number held to ``rule``."""
    parser.add_argument(name, type=number_arg(rule), help=help, **options)


def add_json(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    """Add the ``--json`` flag (machine-readable output) with ``help``."""
    parser.add_argument("--json", action="store_true", help=help)
