"""Subband file names and the canonical ``group_id``.

The correlator names each subband file ``{YYYY-MM-DDTHH:MM:SS}_sb{XX}.hdf5`` with its own
clock, so the 16 files of one observation differ by a second or two. The platform renames
them to the group's canonical timestamp (the first file to arrive); the ``group_id`` is that
timestamp, ISO 8601 UTC without a zone, and sorts lexically in time order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from dsa110_assets.errors import PipelineError
from dsa110_assets.instrument_constants import N_SUBBANDS

__all__ = [
    "EARLIEST_EPOCH_S",
    "EARLIEST_TIMESTAMP",
    "GROUP_ID_FORMAT",
    "INCOMPLETE_SUFFIX",
    "LATEST_EPOCH_S",
    "LATEST_TIMESTAMP",
    "N_SUBBANDS",  # defined by the instrument; importable here with the names it bounds
    "InvalidSubbandName",
    "SubbandName",
    "clamp_epoch",
    "datetime_to_group_id",
    "epoch_to_group_id",
    "group_id_to_datetime",
    "group_id_to_epoch",
    "is_incomplete_name",
    "looks_like_group_id",
    "parse_subband_filename",
    "subband_filename",
    "validate_group_id",
]
GROUP_ID_FORMAT = "%Y-%m-%dT%H:%M:%S"
INCOMPLETE_SUFFIX = "_incomplete.hdf5"

#: The range of timestamps a subband name or group_id may carry (inclusive, UTC).
EARLIEST_TIMESTAMP = "1970-01-01T00:00:00"
LATEST_TIMESTAMP = "2199-12-31T23:59:59"
EARLIEST_EPOCH_S = 0
LATEST_EPOCH_S = int(datetime.fromisoformat(LATEST_TIMESTAMP).replace(tzinfo=UTC).timestamp())

_TIMESTAMP = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
_SUBBAND_RE = re.compile(rf"({_TIMESTAMP})_sb([0-9]{{2}})\.hdf5", re.ASCII)
_GROUP_ID_RE = re.compile(_TIMESTAMP, re.ASCII)


class InvalidSubbandName(PipelineError, ValueError):
    """A file name that is not ``{YYYY-MM-DDTHH:MM:SS}_sb{00..15}.hdf5``."""


@dataclass(frozen=True, slots=True)
class SubbandName:
    """A parsed subband file name."""

    timestamp: str
    subband: int

    @property
    def epoch_s(self) -> int:
        """Seconds since 1970 (UTC); the clustering works on these."""
        return group_id_to_epoch(self.timestamp)

    @property
    def filename(self) -> str:
        """The name as parsed, formatted again (``{timestamp}_sb{XX}.hdf5``)."""
        return subband_filename(self.timestamp, self.subband)


def parse_subband_filename(name: str) -> SubbandName:
    """Parse a subband file name.

    Raises
    ------
    InvalidSubbandName
        With the reason: the pattern, the subband index or the timestamp is wrong.
    """
    match = _SUBBAND_RE.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        raise InvalidSubbandName(f"{name!r} does not match '{{YYYY-MM-DDTHH:MM:SS}}_sb{{XX}}.hdf5'")
    timestamp, sb = match.group(1), int(match.group(2))
    if sb >= N_SUBBANDS:
        raise InvalidSubbandName(f"{name!r}: subband sb{sb:02d} is outside sb00..sb15")
    try:
        _check_timestamp(timestamp)
    except ValueError as exc:
        raise InvalidSubbandName(f"{name!r}: {exc}") from None
    return SubbandName(timestamp, sb)


def _check_timestamp(timestamp: str) -> None:
    """Raise ``ValueError`` unless ``timestamp`` is a real UTC second inside the bounds."""
    try:
        datetime.fromisoformat(timestamp)
    except ValueError:
        raise ValueError(f"{timestamp!r} is not a valid UTC time") from None
    # Same fixed-width format on both sides, so string order is time order.
    if not EARLIEST_TIMESTAMP <= timestamp <= LATEST_TIMESTAMP:
        raise ValueError(
            f"{timestamp!r} is outside the supported range {EARLIEST_TIMESTAMP} .. "
            f"{LATEST_TIMESTAMP}"
        )


def subband_filename(group_id: str, subband: int) -> str:
    """Return the canonical file name of one subband of a group."""
    if not 0 <= subband < N_SUBBANDS:
        raise ValueError(f"subband {subband} is outside 0..{N_SUBBANDS - 1}")
    return f"{group_id}_sb{subband:02d}.hdf5"


def is_incomplete_name(name: str) -> bool:
    """Return whether ``name`` is a file the correlator is still writing.

    The correlator writes ``*_incomplete.hdf5`` and renames it when the file is done.
    """
    return name.endswith(INCOMPLETE_SUFFIX)


def looks_like_group_id(text: object) -> bool:
    """Return whether ``text`` has the shape of a group_id (``YYYY-MM-DDTHH:MM:SS``).

    The shape only, no range check: cheap enough to filter every partition key with.
    """
    return isinstance(text, str) and _GROUP_ID_RE.fullmatch(text) is not None


def validate_group_id(group_id: str) -> str:
    """Return ``group_id`` if it is a canonical timestamp, else raise ``ValueError``."""
    if not isinstance(group_id, str) or not _GROUP_ID_RE.fullmatch(group_id):
        raise ValueError(f"{group_id!r} is not a group_id (YYYY-MM-DDTHH:MM:SS)")
    _check_timestamp(group_id)
    return group_id


def group_id_to_datetime(group_id: str) -> datetime:
    """Return the UTC moment a group_id names (it carries no zone: it is UTC)."""
    return datetime.fromisoformat(group_id).replace(tzinfo=UTC)


def group_id_to_epoch(group_id: str) -> int:
    """Return the Unix seconds of a group_id (the clustering and the name checks use these)."""
    return int(group_id_to_datetime(group_id).timestamp())


def epoch_to_group_id(epoch_s: float) -> str:
    """Format Unix seconds (truncated to the second) as a group_id.

    Raises
    ------
    ValueError
        ``epoch_s`` is not finite or not representable as a date (``OverflowError`` and
        ``OSError`` from ``datetime`` are turned into this one documented error).
    """
    try:
        return datetime.fromtimestamp(int(epoch_s), UTC).strftime(GROUP_ID_FORMAT)
    except (OverflowError, OSError, ValueError) as exc:
        raise ValueError(f"{epoch_s!r} s is not a representable UTC time: {exc}") from None


def clamp_epoch(epoch_s: float) -> int:
    """``epoch_s`` limited to the supported timestamp range (for search bounds)."""
    if epoch_s != epoch_s:  # NaN
        raise ValueError("epoch is NaN")
    return int(min(max(epoch_s, EARLIEST_EPOCH_S), LATEST_EPOCH_S))


def datetime_to_group_id(moment: datetime) -> str:
    """Format a datetime (naive means UTC) as a group_id, dropping fractions of a second."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime(GROUP_ID_FORMAT)
