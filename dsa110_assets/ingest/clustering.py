"""Assigning subband timestamps to canonical groups (the ±tolerance rule).

A file joins the existing group whose canonical timestamp is nearest to its own, if that is
within the tolerance (ties go to the earlier group); otherwise it starts a new group and its
own timestamp becomes the ``group_id``. Because a new group is only ever created farther than
the tolerance from every existing one, canonical timestamps stay more than the tolerance
apart, and a normalized file always maps back to its own group: renaming is idempotent.
"""

from __future__ import annotations

from bisect import bisect_left, insort


class GroupIndex:
    """Sorted canonical group times (epoch seconds) with nearest-within-tolerance lookup."""

    def __init__(self, epochs: list[int] | None = None) -> None:
        self._epochs: list[int] = sorted(set(epochs or ()))

    def __len__(self) -> int:
        return len(self._epochs)

    def __contains__(self, epoch: int) -> bool:
        i = bisect_left(self._epochs, epoch)
        return i < len(self._epochs) and self._epochs[i] == epoch

    def nearest(self, epoch: int, tolerance_s: float) -> int | None:
        """The canonical time within ``tolerance_s`` of ``epoch``, nearest first, or None."""
        i = bisect_left(self._epochs, epoch)
        best: int | None = None
        for j in (i - 1, i):  # the neighbours on either side
            if 0 <= j < len(self._epochs):
                candidate = self._epochs[j]
                distance = abs(candidate - epoch)
                if distance <= tolerance_s and (best is None or distance < abs(best - epoch)):
                    best = candidate
        return best

    def assign(self, epoch: int, tolerance_s: float) -> tuple[int, bool]:
        """Return ``(group_epoch, created)``, adding a new group when none is near enough."""
        found = self.nearest(epoch, tolerance_s)
        if found is not None:
            return found, False
        insort(self._epochs, epoch)
        return epoch, True
