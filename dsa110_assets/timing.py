"""Wall-clock timing of pipeline steps, in one place.

Steps report how long each of their parts took (``rephase_s``, ``wsclean_s``, ...) to the
registry and to Dagster's metadata; :class:`Timings` collects them under those names, and
:class:`Stopwatch` times one span. Both use :func:`time.perf_counter` (monotonic, not
affected by clock changes).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Stopwatch:
    """The seconds since it was made (or last restarted).

    Examples
    --------
    >>> watch = Stopwatch()
    >>> watch.elapsed_s >= 0.0
    True
    """

    def __init__(self) -> None:
        self._start = time.perf_counter()

    @property
    def elapsed_s(self) -> float:
        """Seconds since the watch was started."""
        return time.perf_counter() - self._start

    def restart(self) -> float:
        """Start again from zero; return the seconds of the span that ended."""
        now = time.perf_counter()
        elapsed, self._start = now - self._start, now
        return elapsed


class Timings(dict[str, float]):
    """Durations in seconds by name, filled by :meth:`measure`.

    Examples
    --------
    >>> timings = Timings()
    >>> with timings.measure("read_s"):
    ...     pass
    >>> sorted(timings)
    ['read_s']
    """

    @contextmanager
    def measure(self, name: str) -> Iterator[None]:
        """Add the time spent inside the block to ``self[name]`` (also when it raises)."""
        watch = Stopwatch()
        try:
            yield
        finally:
            self[name] = self.get(name, 0.0) + watch.elapsed_s

    def rounded(self, digits: int = 3) -> dict[str, float]:
        """Return the durations rounded for metadata and logs."""
        return {name: round(value, digits) for name, value in self.items()}
