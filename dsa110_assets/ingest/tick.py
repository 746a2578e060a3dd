"""One pass of the incoming-files sensor, as plain Python.

Each tick looks only at files whose inode changed since the last tick (a ``ctime`` cursor:
arrivals and renames both move it), capped so a backlog drains over several ticks instead of
hitting the sensor timeout; normalizes and registers them; stops waiting for groups idle
longer than the timeout; puts groups whose conversion died (killed, out of memory, aborted)
back to ``pending``; and lists the groups ready for processing. Database work follows the
new files, not the history.

The cursor never leaves a file behind. It is a watermark ``W`` plus the files taken at or
after it, ``done`` (name -> the ctime it had when taken):

* a tick takes the files with ``ctime >= W`` that are not in ``done`` with that same ctime,
  oldest first, ``(ctime, name)`` as the tie-breaker, at most ``max_files``;
* ``W`` then moves to the ctime of the first file left over (nothing below it is untaken),
  but never past ``now - lag``: a file whose ctime is that recent may not be visible yet
  (timestamps are coarse: a whole second on some filesystems, a clock tick on others; a file
  server's clock may be behind ours), so those ctimes stay open and ``done`` keeps them from
  being taken twice.

So any number of files sharing one ctime drain over as many ticks as it takes, a file whose
ctime equals the watermark is still seen, and the cursor holds at most ``max_files`` names
plus those changed in the last ``lag`` seconds.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from dsa110_assets.ingest.outcomes import Action, IngestReport
from dsa110_assets.ingest.passes import ingest_directory
from dsa110_assets.registry import GroupStatus, Registry, StaleGroups, expire_stale_groups
from dsa110_assets.registry.queue import requeue_dead_attempts
from dsa110_assets.registry.subbands import pending_groups
from dsa110_assets.settings import Settings

MAX_WAITING = 1000
#: Seconds behind ``now`` the watermark must stay (see the module docstring).
CURSOR_LAG_S = 120.0

#: Lists ``(name, ctime_ns)`` of a folder's entries; the default is :func:`scan_ctimes`.
CtimeScanner = Callable[[str], Iterable[tuple[str, int]]]


@dataclass
class TickCursor:
    """Where the previous tick stopped (see the module docstring).

    ``ctime_ns`` is the watermark, ``done`` the files taken at or after it, ``waiting`` the
    files to look at again whether or not they change (still being written).
    """

    ctime_ns: int = 0
    waiting: list[str] = field(default_factory=list)
    done: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        """Return the cursor as the sensor stores it; ``done`` grouped by ctime, to stay small."""
        by_ctime: dict[str, list[str]] = {}
        for name, ctime in sorted(self.done.items(), key=lambda item: (item[1], item[0])):
            by_ctime.setdefault(str(ctime), []).append(name)
        return json.dumps({"ctime_ns": self.ctime_ns, "done": by_ctime, "waiting": self.waiting})

    @classmethod
    def from_json(cls, text: str | None) -> TickCursor:
        """Return the cursor stored as ``text``; a missing or unreadable one starts afresh.

        Starting afresh only costs one full rescan, never a file left behind.
        """
        if not text:
            return cls()
        try:
            data = json.loads(text)
            done = {
                str(name): int(ctime)
                for ctime, names in (data.get("done") or {}).items()
                for name in names
            }
            return cls(
                int(data.get("ctime_ns", 0)), [str(n) for n in data.get("waiting", [])], done
            )
        except (ValueError, TypeError, AttributeError):
            return cls()  # an unreadable cursor only costs one full rescan


@dataclass
class TickResult:
    """What one tick did, and the cursor for the next one."""

    cursor: TickCursor
    report: IngestReport | None
    stale: StaleGroups
    ready: list[tuple[str, int]]  # (group_id, retry_count) of pending groups
    backlog: int  # changed files left for later ticks
    requeued: dict[str, GroupStatus] = field(default_factory=dict)  # dead attempts found


def scan_ctimes(directory: str) -> Iterable[tuple[str, int]]:
    """``(name, ctime_ns)`` of every entry of ``directory`` (links not followed)."""
    with os.scandir(directory) as entries:
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:  # gone, or unreadable: nothing to ingest from it
                continue
            yield entry.name, st.st_ctime_ns


def changed_files(
    directory: str,
    cursor: TickCursor,
    limit: int,
    *,
    now_ns: int | None = None,
    lag_s: float = CURSOR_LAG_S,
    scan: CtimeScanner = scan_ctimes,
) -> tuple[list[str], TickCursor, int]:
    """Files changed since ``cursor``, oldest first, at most ``limit``.

    Returns ``(names, next_cursor, left_over)``; ``next_cursor.waiting`` is left empty for
    the caller to fill.
    """
    if limit < 1:
        raise ValueError(f"max files per tick must be >= 1, got {limit}")
    now_ns = time.time_ns() if now_ns is None else now_ns
    horizon = now_ns - int(lag_s * 1e9)
    todo = sorted(
        (ctime, name)
        for name, ctime in scan(directory)
        if ctime >= cursor.ctime_ns and cursor.done.get(name) != ctime
    )
    taken, left = todo[:limit], todo[limit:]
    # Everything below the first file left over has been taken now or before; ctimes at or
    # after the horizon stay open for files not visible yet.
    watermark = min(left[0][0] if left else horizon, horizon)
    done = {name: ctime for name, ctime in cursor.done.items() if ctime >= watermark}
    done.update((name, ctime) for ctime, name in taken if ctime >= watermark)
    return [name for _, name in taken], TickCursor(watermark, [], done), len(left)


def ingest_tick(
    settings: Settings,
    registry: Registry,
    cursor: TickCursor,
    *,
    max_files: int = 4000,
    group_timeout_s: float = 600.0,
    min_subbands: int = 12,
    now: float | None = None,
    scan: CtimeScanner = scan_ctimes,
    lag_s: float = CURSOR_LAG_S,
) -> TickResult:
    """Normalize and register new files, expire stale groups, list ready groups.

    ``now`` (Unix seconds) is the clock for the settle rule, the group timeout and the
    cursor's horizon; ``scan`` lists ``(name, ctime_ns)`` of the input folder.
    """
    now = time.time() if now is None else now
    names, next_cursor, backlog = changed_files(
        str(settings.input_dir), cursor, max_files, now_ns=int(now * 1e9), lag_s=lag_s, scan=scan
    )
    names = list(dict.fromkeys(cursor.waiting + names))
    report = None
    waiting: list[str] = []
    if names:
        report = ingest_directory(
            settings.input_dir,
            names=names,
            registry=registry,
            cluster_tolerance_s=settings.cluster_tolerance_s,
            settle_s=settings.settle_s,
            now=now,
            expected_subbands=settings.expected_subbands,
        )
        # Files still being written first, then unreadable ones that may still be.
        waiting = [o.name for o in report.outcomes if o.action == Action.STILL_WRITING]
        waiting += [o.name for o in report.outcomes if o.action == Action.UNREADABLE and o.retry]
    stale = expire_stale_groups(
        registry,
        wait_s=group_timeout_s,
        min_subbands=min_subbands,
        now=now,
        n_subbands=settings.expected_subbands,
    )
    # A conversion killed mid-run (SIGKILL, OOM, abort in casacore) leaves its group
    # in_progress; put it back to pending so the run below (a new run key) takes it over.
    requeued = requeue_dead_attempts(registry, stage="convert", now=now)
    ready = pending_groups(registry)
    next_cursor.waiting = waiting[:MAX_WAITING]
    return TickResult(next_cursor, report, stale, ready, backlog, requeued)
