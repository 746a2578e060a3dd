"""What a user sends the API, checked: dates, times, page numbers, queue states, image types.

Every value from a query string or a request body goes through one of these functions, so a
bad one is refused with one line that names the parameter and the rule it broke (the same
rules as the ``dsa110`` command: ASCII digits, real calendar dates, times converted to UTC),
and never reaches SQL or Dagster. They raise :class:`InputError`; the HTTP shell turns it
into a 4xx response (see :mod:`dsa110_assets.api.errors`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from dsa110_assets.errors import PipelineError
from dsa110_assets.registry.queue import QueueState
from dsa110_assets.settings import NumberRule, parse_number

#: Rows per page: default and bounds (a page of 500 rows is still one small response).
DEFAULT_PAGE_SIZE = 50
PAGE_SIZE_RULE = NumberRule(int, 1, 500)
#: Page numbers start at 1; the upper bound only keeps the arithmetic small.
PAGE_RULE = NumberRule(int, 1, 10_000_000)
#: Days of products per day that ``/api/status`` lists, newest last.
DEFAULT_STATUS_DAYS = 7
STATUS_DAYS_RULE = NumberRule(int, 1, 366)
#: The image products WSClean and the primary-beam step register (``images.image_type``).
IMAGE_TYPES = ("image", "residual", "model", "psf", "dirty", "pb", "pbcor")

_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)


class InputError(PipelineError, ValueError):
    """A request parameter the API cannot use; the message names it and says why."""


def parse_int(name: str, text: str | None, rule: NumberRule, default: int) -> int:
    """Return the integer parameter ``name`` (``default`` when absent), held to ``rule``.

    Raises
    ------
    InputError
        Not ASCII decimal, or out of range.
    """
    if text is None:
        return default
    try:
        return int(parse_number(text, rule))
    except ValueError as exc:
        raise InputError(f"{name}: {exc}") from None


def parse_day(name: str, text: str) -> date:
    """Return the calendar date ``text`` (``YYYY-MM-DD``, ASCII digits, a real day).

    Raises
    ------
    InputError
        Naming the parameter.
    """
    raw = text.strip()
    if not _DATE_RE.fullmatch(raw):
        raise InputError(f"{name}: {text!r} is not a date YYYY-MM-DD")
    try:
        return date.fromisoformat(raw)
    except ValueError as exc:
        raise InputError(f"{name}: {text!r} is not a date: {exc}") from None


def day_bounds(day: date) -> tuple[str, str]:
    """Return ``[lo, hi)`` group_id bounds of a UTC day (group ids are its ISO start times).

    ``9999-12-31`` has no next day; ``U`` sorts after the ``T`` of every group_id of it.
    """
    try:
        return day.isoformat(), (day + timedelta(days=1)).isoformat()
    except OverflowError:
        return day.isoformat(), day.isoformat() + "U"


def parse_time(name: str, text: str) -> datetime:
    """Return an ISO 8601 time as an aware UTC datetime (no offset means UTC).

    As ``dsa110 mosaic create --start``: an offset is honoured, non-ASCII digits and years
    outside 1..9999 are refused.

    Raises
    ------
    InputError
        Naming the parameter and the expected form.
    """
    try:
        if not isinstance(text, str) or not text.isascii():
            raise ValueError
        moment = datetime.fromisoformat(text.strip())
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise InputError(
            f"{name}: {text!r} is not an ISO time (YYYY-MM-DDTHH:MM:SS, optionally with Z or"
            " +HH:MM)"
        ) from None


def parse_state(text: str | None) -> QueueState | None:
    """Return the queue state ``text`` names (None when absent).

    Raises
    ------
    InputError
        Listing the states there are.
    """
    if text is None:
        return None
    try:
        return QueueState(text.strip())
    except ValueError:
        known = ", ".join(s.value for s in QueueState)
        raise InputError(f"state: {text!r} is not a queue state ({known})") from None


def parse_image_type(text: str | None) -> str | None:
    """Return the image product type ``text`` names (None when absent: every type).

    Raises
    ------
    InputError
        Listing the types there are.
    """
    if text is None:
        return None
    if text.strip() not in IMAGE_TYPES:
        raise InputError(f"image_type: {text!r} is not an image type ({', '.join(IMAGE_TYPES)})")
    return text.strip()


@dataclass(frozen=True)
class Page:
    """One page of a listing: its number (from 1) and size, and the SQL window it reads."""

    number: int
    size: int

    @property
    def offset(self) -> int:
        """Rows before this page."""
        return (self.number - 1) * self.size


def parse_page(page: str | None, page_size: str | None) -> Page:
    """Return the page asked for, ``page`` and ``page_size`` held to their rules.

    Raises
    ------
    InputError
        Either is not an integer in range.
    """
    return Page(
        parse_int("page", page, PAGE_RULE, 1),
        parse_int("page_size", page_size, PAGE_SIZE_RULE, DEFAULT_PAGE_SIZE),
    )


def page_count(total: int, size: int) -> int:
    """Return how many pages ``total`` rows make (at least 1: an empty listing has page 1)."""
    return max(1, math.ceil(total / size))


def check_page(page: Page, total: int) -> int:
    """Return the number of pages, refusing a page past the last.

    Page 1 always exists (it may be empty), so a client can always ask for it.

    Raises
    ------
    InputError
        The page is past the last one.
    """
    pages = page_count(total, page.size)
    if page.number > pages:
        raise InputError(
            f"page: {page.number} is out of range: {total} rows make {pages} page"
            f"{'s' if pages != 1 else ''} of {page.size}"
        )
    return pages
