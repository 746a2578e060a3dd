"""Assigning subband files to observations (groups), independent of arrival order.

The rule
--------
A group is one observation, identified by when its data start: the first integration's start
in the file's own ``time_array`` (:func:`dsa110_assets.ingest.content.read_content_time`).
All 16 subbands of one observation carry the same integration times (the correlator's one
clock; the converter demands agreement to 0.05 s), whereas the names are stamped by 16
different node clocks. So:

* a file joins the group whose observation start is within the tolerance of its own (nearest
  first, ties to the earlier group); otherwise it starts a new group;
* the new group's ``group_id`` is the name stamp of the file that started it (the first to
  arrive, as the storage architecture specifies), and it is never changed afterwards.

Membership depends only on the content times, never on the names or the order files arrive
in: any permutation of one observation's files gives the same group, and the next
observation (309.2 s later) can never merge into it while the tolerance is below 309.2 s,
whatever the node clocks wrote into the names. (Names are checked separately: a name more
than :data:`~dsa110_assets.ingest.content.NAME_TIME_TOLERANCE_S` from its content is refused.)
Because a new group is only ever created farther than the tolerance from every existing one,
observation starts of groups stay more than the tolerance apart, and a normalized file maps
back to its own group: renaming is idempotent.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort

from dsa110_assets.errors import PipelineError


class GroupIdTaken(PipelineError, ValueError):
    """The group_id a new observation would get already names a different observation."""


class GroupIndex:
    """Groups as sorted ``(observation_start_s, group_id)`` with nearest-within lookup."""

    def __init__(self, groups: list[tuple[float, str]] | None = None) -> None:
        self._starts: list[tuple[float, str]] = sorted(set(groups or ()))
        self._ids: dict[str, float] = {gid: start for start, gid in self._starts}

    def __len__(self) -> int:
        return len(self._starts)

    def __contains__(self, group_id: object) -> bool:
        return group_id in self._ids

    def start_of(self, group_id: str) -> float:
        """Return the observation start of a known group."""
        return self._ids[group_id]

    def nearest(self, start_s: float, tolerance_s: float) -> str | None:
        """Return the group whose observation start is within ``tolerance_s``, nearest first."""
        i = bisect_left(self._starts, (start_s, ""))
        best: tuple[float, str] | None = None
        for j in (i - 1, i):  # the neighbours on either side
            if 0 <= j < len(self._starts):
                candidate = self._starts[j]
                distance = abs(candidate[0] - start_s)
                if distance <= tolerance_s and (best is None or distance < abs(best[0] - start_s)):
                    best = candidate
        return None if best is None else best[1]

    def assign(self, start_s: float, tolerance_s: float, new_group_id: str) -> tuple[str, bool]:
        """Return ``(group_id, created)``; a new group is named ``new_group_id``.

        Raises
        ------
        ValueError
            ``start_s`` or ``tolerance_s`` is not finite, or the tolerance is negative.
        GroupIdTaken
            No group is near enough, and ``new_group_id`` already names another group.
        """
        if not math.isfinite(start_s):
            raise ValueError(f"observation start {start_s!r} is not finite")
        if not (math.isfinite(tolerance_s) and tolerance_s >= 0):
            raise ValueError(f"tolerance {tolerance_s!r} s must be finite and >= 0")
        found = self.nearest(start_s, tolerance_s)
        if found is not None:
            return found, False
        if new_group_id in self._ids:
            raise GroupIdTaken(
                f"group_id {new_group_id} already names the observation starting "
                f"{self._ids[new_group_id] - start_s:+.1f} s from this one"
            )
        insort(self._starts, (start_s, new_group_id))
        self._ids[new_group_id] = start_s
        return new_group_id, True
