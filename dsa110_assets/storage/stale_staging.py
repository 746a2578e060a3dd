"""Staging left behind by conversions whose process died, found and removed.

Why. A conversion stages its Measurement Set under ``.{name}.ms.staging-{pid}-{token}`` in
the tmpfs folder (RAM) or the SSD scratch folder (:mod:`dsa110_assets.conversion.convert`)
and removes it itself, or the next conversion of the same group sweeps it. A group that is
never converted again (it failed for good, or its worker was killed and the group was given
up) leaves its staging in place for ever, and in tmpfs that is memory the host no longer has.
The tiered-storage design alerts on staging that grows ("cleanup job failed!"); this is the
cleanup job.

An entry is stale when its writer's pid is not running on this host
(:func:`dsa110_assets.safe_fs.pid_alive`: a pid of another user, or our own, counts as alive,
so nothing being written is touched). Only names of that exact shape directly in the two
staging folders are considered: the tmpfs folder is usually ``/dev/shm``, shared with every
program of the host, whose files are never ours to judge.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from dsa110_assets.safe_fs import pid_alive, remove_path, tree_bytes
from dsa110_assets.settings import Settings
from dsa110_assets.storage.placement import Tier, tier_root

__all__ = [
    "STAGING_ENTRY",
    "STAGING_TIERS",
    "StagingEntry",
    "StagingReport",
    "clean_stale_staging",
    "staging_entries",
]

#: A conversion's staging entry, ``.{name}.staging-{pid}-{token}`` (see
#: :func:`dsa110_assets.conversion.convert._stage`); group 1 is the writer's pid.
STAGING_ENTRY = re.compile(r"\..+\.staging-([0-9]+)-[^/]+")
#: The tiers conversions stage on (and the tiered-storage design's staging thresholds hold).
STAGING_TIERS = (Tier.TMPFS, Tier.SSD_SCRATCH)


@dataclass(frozen=True)
class StagingEntry:
    """One staging entry: where, which tier, whose pid, how many bytes, and whether stale."""

    path: Path
    tier: str
    pid: int
    bytes: int
    stale: bool


@dataclass
class StagingReport:
    """What :func:`clean_stale_staging` found: stale entries (removed unless dry) and live ones."""

    stale: list[StagingEntry] = field(default_factory=list)
    live: list[StagingEntry] = field(default_factory=list)
    dry_run: bool = False

    @property
    def stale_bytes(self) -> int:
        """Bytes the stale entries held."""
        return sum(e.bytes for e in self.stale)

    def summary(self) -> str:
        """Return one line: what was (or would be) removed and what is still being written."""
        verb = "would remove" if self.dry_run else "removed"
        return (
            f"stale staging: {verb} {len(self.stale)} entries ({self.stale_bytes} bytes) of"
            f" dead conversions; {len(self.live)} in progress left alone"
        )


def staging_entries(
    settings: Settings, tiers: Iterable[Tier] = STAGING_TIERS
) -> list[StagingEntry]:
    """Return every conversion staging entry of the staging ``tiers`` (both), stale or live.

    Sizes are disk blocks (what the entry takes from RAM or the SSD). A folder that does not
    exist or cannot be read holds none.
    """
    found = []
    for tier in tiers:
        folder = tier_root(settings, tier)
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        for name in names:
            match = STAGING_ENTRY.fullmatch(name)
            if match is None:
                continue
            path = folder / name
            pid = int(match.group(1))
            found.append(StagingEntry(path, tier.value, pid, _bytes(path), not pid_alive(pid)))
    return found


def clean_stale_staging(settings: Settings, *, dry_run: bool = False) -> StagingReport:
    """Remove the staging entries of dead conversions; report them and the live ones.

    Re-running is safe: a removed entry is gone, a live one stays until its writer ends.
    """
    report = StagingReport(dry_run=dry_run)
    for entry in staging_entries(settings):
        if not entry.stale:
            report.live.append(entry)
            continue
        if not dry_run:
            remove_path(entry.path)
        report.stale.append(entry)
    return report


def _bytes(path: Path) -> int:
    """Return the disk blocks' bytes of a staging file or tree (0 if it vanished)."""
    try:
        if path.is_dir() and not path.is_symlink():
            return tree_bytes(path, allocated=True)
        return os.lstat(path).st_blocks * 512
    except OSError:
        return 0
