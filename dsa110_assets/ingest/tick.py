"""One pass of the incoming-files sensor, as plain Python.

Each tick looks only at files whose inode changed since the last tick (a ``ctime`` cursor:
arrivals and renames both move it), capped so a backlog drains over several ticks instead of
hitting the sensor timeout; normalizes and registers them; stops waiting for groups idle
longer than the timeout; and lists the groups ready for processing. Database work follows the
new files, not the history.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

from dsa110_assets.ingest.normalize import IngestReport, ingest_directory
from dsa110_assets.registry import Registry, StaleGroups, expire_stale_groups
from dsa110_assets.settings import Settings

MAX_WAITING = 1000


@dataclass
class TickCursor:
    """Where the previous tick stopped: the newest ctime handled and files still waiting."""

    ctime_ns: int = 0
    waiting: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"ctime_ns": self.ctime_ns, "waiting": self.waiting})

    @classmethod
    def from_json(cls, text: str | None) -> TickCursor:
        if not text:
            return cls()
        try:
            data = json.loads(text)
            return cls(int(data.get("ctime_ns", 0)), [str(n) for n in data.get("waiting", [])])
        except (ValueError, TypeError, AttributeError):
            return cls()  # an unreadable cursor only costs one full rescan


@dataclass
class TickResult:
    cursor: TickCursor
    report: IngestReport | None
    stale: StaleGroups
    ready: list[tuple[str, int]]  # (group_id, retry_count) of pending groups
    backlog: int  # changed files left for later ticks


def changed_files(directory: str, since_ns: int, limit: int) -> tuple[list[str], int, int]:
    """Names of files whose ctime is newer than ``since_ns``, oldest first, at most ``limit``.

    Returns ``(names, newest_ctime_ns_taken, left_over)``.
    """
    changed: list[tuple[int, str]] = []
    with os.scandir(directory) as entries:
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if st.st_ctime_ns > since_ns:
                changed.append((st.st_ctime_ns, entry.name))
    changed.sort()
    taken = changed[:limit]
    newest = taken[-1][0] if taken else since_ns
    return [name for _, name in taken], newest, len(changed) - len(taken)


def ingest_tick(
    settings: Settings,
    registry: Registry,
    cursor: TickCursor,
    *,
    max_files: int = 4000,
    group_timeout_s: float = 600.0,
    min_subbands: int = 12,
    now: float | None = None,
) -> TickResult:
    """Normalize and register new files, expire stale groups, list ready groups."""
    now = time.time() if now is None else now
    names, newest, backlog = changed_files(str(settings.input_dir), cursor.ctime_ns, max_files)
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
        waiting = [o.name for o in report.outcomes if o.action == "still_writing"]
    stale = expire_stale_groups(
        registry,
        wait_s=group_timeout_s,
        min_subbands=min_subbands,
        now=now,
        n_subbands=settings.expected_subbands,
    )
    ready = [
        (row[0], int(row[1] or 0))
        for row in registry.query(
            "SELECT group_id, retry_count FROM processing_queue WHERE state = 'pending'"
            " ORDER BY group_id"
        )
    ]
    return TickResult(TickCursor(newest, waiting[:MAX_WAITING]), report, stale, ready, backlog)
