"""A mosaic asked for over a time range, as Dagster runs of the daily mosaic: plan and state.

The platform's mosaic asset is ``daily_mosaic``, partitioned by UTC day (one run per day:
see :mod:`dsa110_assets.defs.daily.assets`); there is no Dagster job for an arbitrary range
(``dsa110 mosaic create`` builds one outside Dagster). So a request for ``[start, end)``
launches one run of ``daily_mosaic`` per UTC day the range touches, each tagged with the
request's name, and the request's state is that of its runs together. The products are the
days' mosaics (one per hourly RA tile), which cover whole days: a range that starts or ends
mid-day gets the whole of its first and last day.

Everything here is plain Python (names, days, states); the Dagster calls are in
:mod:`dsa110_assets.api.dagster_client`.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from dsa110_assets.api.inputs import InputError, parse_time

#: The job and asset a mosaic request runs (see the module docstring).
MOSAIC_JOB = "daily_products"
MOSAIC_ASSET = "daily_mosaic"
#: Tags on every run of a request: its name, and the range asked for.
NAME_TAG = "dsa110/mosaic"
START_TAG = "dsa110/mosaic_start"
END_TAG = "dsa110/mosaic_end"
#: Dagster's tag naming a run's partition.
PARTITION_TAG = "dagster/partition"
#: The longest range one request may cover (one run per day).
MAX_DAYS = 31

_STAMP = "%Y%m%dT%H%M%S"
NAME_RE = re.compile(r"mosaic-[0-9]{8}T[0-9]{6}-[0-9]{8}T[0-9]{6}-[0-9a-f]{8}", re.ASCII)


class MosaicState(StrEnum):
    """What ``/api/mosaic/status/{name}`` reports."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


#: Dagster run status -> the request's state of that run.
RUN_STATES: dict[str, MosaicState] = {
    "QUEUED": MosaicState.QUEUED,
    "NOT_STARTED": MosaicState.QUEUED,
    "MANAGED": MosaicState.QUEUED,
    "STARTING": MosaicState.QUEUED,
    "STARTED": MosaicState.RUNNING,
    "CANCELING": MosaicState.RUNNING,
    "SUCCESS": MosaicState.DONE,
    "FAILURE": MosaicState.FAILED,
    "CANCELED": MosaicState.FAILED,
}


@dataclass(frozen=True)
class MosaicPlan:
    """A checked request: the range (UTC), its UTC days and the name its runs carry."""

    start: datetime
    end: datetime
    days: tuple[str, ...]
    name: str


def covered_days(start: datetime, end: datetime) -> list[str]:
    """Return the UTC days ``[start, end)`` touches (``end`` at midnight ends the day before)."""
    first = start.date()
    last = (end - timedelta(microseconds=1)).date()
    return [(first + timedelta(days=k)).isoformat() for k in range((last - first).days + 1)]


def mosaic_name(start: datetime, end: datetime, token: str | None = None) -> str:
    """Return a new request's name: the range and a random token (two requests never share).

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> mosaic_name(datetime(2026, 1, 15, tzinfo=UTC), datetime(2026, 1, 16, tzinfo=UTC), "0" * 8)
    'mosaic-20260115T000000-20260116T000000-00000000'
    """
    token = token or secrets.token_hex(4)
    return f"mosaic-{start.strftime(_STAMP)}-{end.strftime(_STAMP)}-{token}"


def plan_mosaic(start_text: str, end_text: str, *, token: str | None = None) -> MosaicPlan:
    """Check a request's ``start`` and ``end`` and return its plan.

    Raises
    ------
    InputError
        A time is not ISO, ``end`` is not after ``start``, or the range covers more than
        :data:`MAX_DAYS` days.
    """
    start, end = parse_time("start", start_text), parse_time("end", end_text)
    if end <= start:
        raise InputError(f"end: {end.isoformat()} is not after start {start.isoformat()} (UTC)")
    days = covered_days(start, end)
    if len(days) > MAX_DAYS:
        raise InputError(
            f"end: the range covers {len(days)} UTC days; at most {MAX_DAYS} per request"
        )
    return MosaicPlan(start, end, tuple(days), mosaic_name(start, end, token))


def check_partitions(days: Iterable[str], first: str | None, last: str | None) -> None:
    """Refuse days outside the daily partitions ``first..last`` (a day exists once it is over).

    Raises
    ------
    InputError
        Naming the first day that has no partition, and the partitions there are.
    """
    for day in days:
        if first is None or last is None or not first <= day <= last:
            there = f"{first} to {last}" if first and last else "none yet"
            raise InputError(
                f"start/end: {day} has no daily mosaic partition (partitions: {there}; a UTC"
                " day's partition exists once the day is over)"
            )


def is_mosaic_name(text: str) -> bool:
    """Whether ``text`` has the shape of a name :func:`mosaic_name` makes."""
    return bool(NAME_RE.fullmatch(text))


def run_state(dagster_status: str) -> MosaicState:
    """Return the state of one run from its Dagster status (an unknown status: queued)."""
    return RUN_STATES.get(dagster_status, MosaicState.QUEUED)


def request_state(dagster_statuses: Iterable[str]) -> MosaicState:
    """Return a request's state from its runs' Dagster statuses.

    Done when every run succeeded; failed once every run has ended and one did not succeed;
    otherwise running when one has started, else queued.

    Raises
    ------
    ValueError
        No runs (the caller answers 404 instead).
    """
    states = [run_state(s) for s in dagster_statuses]
    if not states:
        raise ValueError("a mosaic request with no runs has no state")
    if all(s is MosaicState.DONE for s in states):
        return MosaicState.DONE
    if all(s in (MosaicState.DONE, MosaicState.FAILED) for s in states):
        return MosaicState.FAILED
    if any(s is not MosaicState.QUEUED for s in states):
        return MosaicState.RUNNING
    return MosaicState.QUEUED


def run_tags(plan: MosaicPlan, day: str) -> dict[str, str]:
    """Return the tags of the run of ``day``: its partition, the request's name and range."""
    return {
        PARTITION_TAG: day,
        NAME_TAG: plan.name,
        START_TAG: plan.start.isoformat(),
        END_TAG: plan.end.isoformat(),
    }
