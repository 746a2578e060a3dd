"""What a subband file's content says about when it was observed, read cheaply at ingest.

The name of a correlator file is stamped by the writing node's own clock; its content carries
the correlator's integration times (``Header/time_array``, Julian dates of the integration
centres, and ``Header/integration_time`` in seconds). Ingest reads only the first element of
each (a few kilobytes, whatever the file size) so that it can:

* refuse to register a file that cannot be a subband yet (0 bytes, not HDF5, no readable
  ``Header/time_array``): such a file never takes a (group, subband) slot, so the real file
  that arrives later registers normally;
* refuse a file whose content is another observation than its name says, naming that file;
* group files by the observation they hold rather than by their node-stamped names, which is
  what makes grouping independent of arrival order (:mod:`dsa110_assets.ingest.clustering`).

The name tolerance, from the instrument facts (``dsa110-instrument.md``):

* honest names are within a few seconds of the content: the nodes' clocks differ by 1-2 s,
  names are truncated to the second, and a node may stamp the file up to one integration
  (12.88 s) after the observation started;
* a file of any other observation is at least one file length (24 x 12.88 s = 309.2 s) away,
  because observations are contiguous files.

:data:`NAME_TIME_TOLERANCE_S` = 60 s sits between the two with a wide margin on both sides
(almost 4x the worst honest error of about 16 s, 5x below the nearest other observation),
and equals the default clustering tolerance, so a name that clustering would have accepted
as "the same observation" is also accepted as an honest name.
"""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from dsa110_assets.errors import PipelineError
from dsa110_assets.instrument import FILE_DURATION_S, INTEGRATION_S
from dsa110_assets.naming import EARLIEST_EPOCH_S, LATEST_EPOCH_S, epoch_to_group_id

#: Largest accepted distance between a file's name and the start of its content (seconds).
NAME_TIME_TOLERANCE_S = 60.0
#: A float64 Julian date resolves about 40 microseconds; differences are compared to 1 ms.
TIME_RESOLUTION_S = 1e-3
UNIX_EPOCH_JD = 2440587.5
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# An integration longer than a file would be nonsense; the instrument's is 12.88 s.
_MAX_INTEGRATION_S = FILE_DURATION_S

# Margins: above 3x the worst honest error (clock 2 s + truncation 1 s + one integration),
# below half the distance to the next observation.
assert 3 * (2.0 + 1.0 + INTEGRATION_S) < NAME_TIME_TOLERANCE_S < FILE_DURATION_S / 2


class UnreadableSubband(PipelineError, ValueError):
    """A file that cannot (yet) be read as a subband: empty, not HDF5, or no usable times."""


@dataclass(frozen=True, slots=True)
class ContentTime:
    """When a file's data were taken, from its own header.

    ``start_s`` is the start of the first integration in Unix seconds (UTC): the first
    ``time_array`` entry (an integration centre) minus half its ``integration_time``.
    """

    start_s: float
    integration_s: float

    @property
    def start_iso(self) -> str:
        """The start as a group_id-style timestamp (truncated to the second), for messages."""
        return epoch_to_group_id(math.floor(self.start_s))


def read_content_time(path: str | os.PathLike[str]) -> ContentTime:
    """Read the observation start of one subband file, without following symlinks.

    Only ``Header/time_array[0]`` and ``Header/integration_time[0]`` are read, so the cost
    does not grow with the file.

    Raises
    ------
    UnreadableSubband
        With the reason: empty, not a regular file, not HDF5 (or truncated), no readable or
        no plausible ``time_array`` / ``integration_time``.
    """
    path = Path(path)
    try:
        # O_NONBLOCK: a FIFO or device put in a file's place must not block the sensor.
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
        fd = os.open(path, flags)
    except OSError as exc:
        raise UnreadableSubband(f"cannot be opened: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise UnreadableSubband("not a regular file")
        if st.st_size == 0:
            raise UnreadableSubband("empty (0 bytes): not written yet, or a failed write")
        signature = handle.read(len(_HDF5_SIGNATURE))
        handle.seek(0)
        if signature != _HDF5_SIGNATURE:
            raise UnreadableSubband(f"not an HDF5 file ({st.st_size} bytes, no HDF5 signature)")
        try:
            with h5py.File(handle, "r") as f:
                centre_jd = _first(f, "Header/time_array")
                integration_s = _first(f, "Header/integration_time")
        except UnreadableSubband:
            raise
        except (OSError, RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise UnreadableSubband(f"HDF5 header cannot be read (truncated?): {exc}") from None
    if not (math.isfinite(integration_s) and 0 < integration_s <= _MAX_INTEGRATION_S):
        raise UnreadableSubband(f"integration_time[0] = {integration_s!r} s is not plausible")
    start_s = (centre_jd - UNIX_EPOCH_JD) * 86400.0 - integration_s / 2
    if not (math.isfinite(start_s) and EARLIEST_EPOCH_S <= start_s <= LATEST_EPOCH_S):
        raise UnreadableSubband(f"time_array[0] = {centre_jd!r} is not a plausible Julian date")
    return ContentTime(start_s, integration_s)


def _first(f: h5py.File, name: str) -> float:
    """Return the first element of a numeric dataset, as a float."""
    if name not in f:
        raise UnreadableSubband(f"has no {name}")
    dset = f[name]
    if not isinstance(dset, h5py.Dataset) or dset.dtype.kind not in "fiu":
        raise UnreadableSubband(f"{name} is not a numeric dataset")
    if dset.shape == () or dset.size == 0:
        raise UnreadableSubband(f"{name} is empty or a scalar")
    value = np.asarray(dset[(0,) * len(dset.shape)], dtype=np.float64)
    return float(value)


def name_disagreement(name_epoch_s: float, content: ContentTime) -> str | None:
    """Why a file's name and content are not the same observation, or None when they are."""
    offset = name_epoch_s - content.start_s
    if abs(offset) <= NAME_TIME_TOLERANCE_S + TIME_RESOLUTION_S:
        return None
    return (
        f"content is another observation: its time_array starts at {content.start_iso}, "
        f"{offset:+.0f} s from the time in its name (tolerance {NAME_TIME_TOLERANCE_S:g} s)"
    )
