"""Garbage collection of products: files no row names, and rows whose file is gone.

Why. The schema-addressed-storage design's garbage collection: "when you delete rows ...
the directories remain in storage (orphaned)"; its ``gc.collect`` "scans the database and
removes storage paths that no longer have corresponding table entries". Here products are
also written before their row (a step publishes, then registers) and rows outlive files an
operator removed by hand, so both directions are checked, and nothing is deleted at once:

* an **orphan** is a product on the SSD products tier (in the folder of a product kind:
  ``ms``, ``images``, ``thumbnails``, ``caltables``, ``mosaics``, ``photometry``,
  ``lightcurves``) that no registry row names and that was last modified more than
  ``min_age_s`` ago (default a day: younger files may be between their write and their
  registration). It is moved to ``{products}/.quarantine/{YYYY-MM-DD}/{its relative path}``
  on its own tier (one rename), and removed by the first run at least ``grace_days`` after
  that day ends (default 7). To keep one, move it back and register it;
* a **missing** product is a row whose file is gone: its ``missing_since`` is set (and
  cleared if the file comes back); the row itself is kept, with the product's history.

What is a unit: a file, a CASA table (a folder holding ``table.dat``: a Measurement Set, a
calibration table) or an MS's ``.flagversions``; other folders (``caltables/rebased/``) are
looked into, never moved. The photometry and light-curve CSVs have no row of their own: they
are known when the group or day they are named after is in the registry; every FITS of a
group's imaging (``images/{group_id}-...fits``; WSClean's dirty image has no row) is known
while the group has an image row. An MS's ``.flagversions`` is known with its MS.

A path is compared with its folder resolved, so a row written while a tier was reached
through another name (a symlink, a mount point) still names its file; and the registry is
read again after the walk, so a product registered meanwhile is not taken for an orphan.

What is never touched: hidden names (every temporary of a write in flight starts with ``.``,
see :mod:`dsa110_assets.safe_fs`, and so does the quarantine), anything on another tier (the
raw input, the staging folders, the state tier with the registry, the archive), and a folder
of a product kind that overlaps one of those (a misconfiguration, reported). A dry run reads
and reports, and changes nothing. Re-running is safe: what is quarantined is hidden, a mark
already set is kept.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from dsa110_assets.registry.connection import Registry
from dsa110_assets.registry.orphans import (
    ProductRow,
    imaged_groups,
    known_partitions,
    known_paths,
    product_rows,
    set_missing,
)
from dsa110_assets.safe_fs import is_within, remove_path, rename_no_replace
from dsa110_assets.settings import Settings
from dsa110_assets.storage.lifecycle_rules import (
    DEFAULT_GRACE_DAYS,
    GRACE_DAYS_RULE,
    MIN_AGE_RULE,
    MIN_AGE_S,
)
from dsa110_assets.storage.placement import KIND_TIERS, Tier, kind_folder, tier_root

__all__ = [
    "DEFAULT_GRACE_DAYS",
    "GRACE_DAYS_RULE",
    "MIN_AGE_S",
    "PRODUCT_KINDS",
    "QUARANTINE",
    "GcReport",
    "collect_garbage",
]

QUARANTINE = ".quarantine"
#: The kinds collected: every kind whose tier is the SSD products tier.
PRODUCT_KINDS = tuple(kind for kind, tiers in KIND_TIERS.items() if tiers[0] is Tier.SSD_PRODUCTS)
#: Kinds whose files are named after a partition instead of having a row: the partition.
_PARTITION_NAMED = {
    "photometry": re.compile(r"(.+?)(?:-mosaic)?\.csv"),
    "lightcurves": re.compile(r"(.+)\.csv"),
}
#: Characters of a canonical group_id, ``YYYY-MM-DDTHH:MM:SS``.
_GROUP_ID_LEN = 19
#: Companions that belong to the product named by the rest of their path.
_COMPANION_SUFFIXES = (".flagversions",)
#: The tiers a product folder must not overlap.
_FOREIGN_TIERS = (Tier.HDD_INPUT, Tier.TMPFS, Tier.SSD_SCRATCH, Tier.HDD_STATE, Tier.COLD_ARCHIVE)


@dataclass
class GcReport:
    """What one :func:`collect_garbage` pass found and did.

    Attributes
    ----------
    quarantined
        ``(orphan, where it now is)``; in a dry run, where it would go.
    removed
        Quarantine day folders past their grace period, removed (or, dry, to remove).
    missing
        Every product row whose file is gone (``missing_since`` as it is after this pass).
    newly_missing, found_again
        Rows marked missing by this pass, and rows whose mark this pass cleared.
    young
        Unregistered products left alone because they are younger than ``min_age_s``.
    problems
        ``(path, reason)``: folders skipped, moves that failed.
    """

    dry_run: bool = False
    quarantined: list[tuple[Path, Path]] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    missing: list[ProductRow] = field(default_factory=list)
    newly_missing: int = 0
    found_again: int = 0
    young: list[Path] = field(default_factory=list)
    problems: list[tuple[Path, str]] = field(default_factory=list)

    def summary(self) -> str:
        """Return one line: orphans quarantined, quarantine removed, rows missing."""
        dry = self.dry_run
        line = (
            f"gc: {'would quarantine' if dry else 'quarantined'} {len(self.quarantined)}"
            f" orphans, {'would remove' if dry else 'removed'} {len(self.removed)} quarantine"
            f" days past their grace; {len(self.missing)} rows with their file missing"
            f" ({self.newly_missing} new, {self.found_again} found again)"
        )
        if self.young:
            line += f"; {len(self.young)} unregistered but too young"
        if self.problems:
            line += f"; {len(self.problems)} problems"
        return line


def collect_garbage(
    settings: Settings,
    registry: Registry,
    *,
    now: float,
    grace_days: int = DEFAULT_GRACE_DAYS,
    dry_run: bool = False,
    min_age_s: float = MIN_AGE_S,
) -> GcReport:
    """Quarantine orphan products, remove expired quarantine, mark rows whose file is gone.

    Parameters
    ----------
    settings
        The tiers.
    registry
        The registry (read-only is enough for a dry run).
    now
        The current time, Unix seconds (injected: ages and the quarantine day come from it).
    grace_days
        Days a quarantined orphan is kept after its quarantine day ends (validated).
    dry_run
        Report; move, remove and mark nothing.
    min_age_s
        Unregistered products modified more recently are not orphans yet.

    Raises
    ------
    ValueError
        ``grace_days`` or ``min_age_s`` out of range.
    """
    grace = int(GRACE_DAYS_RULE.check(grace_days, name="grace_days"))
    min_age = MIN_AGE_RULE.check(min_age_s, name="min_age_s")
    report = GcReport(dry_run=dry_run)
    today = datetime.fromtimestamp(now, UTC).date()
    for base in _quarantine_bases(settings):
        _purge_expired(base / QUARANTINE, today, grace, report)
    for unit in _orphans(settings, registry, now - min_age, report):
        _quarantine(settings, unit, today, report)
    _mark_missing(registry, now, report)
    return report


@dataclass(frozen=True)
class _Registered:
    """What the registry accounts for, read once per look.

    Its paths (folders resolved, see :class:`_Canonical`), the folders holding them, the
    partitions the CSVs are named after, and the groups with images.
    """

    paths: frozenset[str]
    holders: frozenset[str]
    partitions: frozenset[str]
    imaged: frozenset[str]

    @classmethod
    def read(cls, registry: Registry) -> _Registered:
        """Read every path, partition and imaged group from ``registry``."""
        canonical = _Canonical()
        paths = frozenset(canonical(p) for p in known_paths(registry))
        return cls(
            paths,
            frozenset(_ancestors(paths)),
            frozenset(known_partitions(registry)),
            frozenset(imaged_groups(registry)),
        )

    def accounts_for(self, unit: str, name: str, kind: str) -> bool:
        """Return whether the registry accounts for ``unit`` (canonical), named ``name``."""
        if unit in self.paths or unit in self.holders or _inside(unit, self.paths):
            return True
        for suffix in _COMPANION_SUFFIXES:
            if unit.endswith(suffix) and unit.removesuffix(suffix) in self.paths:
                return True
        if kind == "images" and name[_GROUP_ID_LEN : _GROUP_ID_LEN + 1] == "-":
            return name[:_GROUP_ID_LEN] in self.imaged
        pattern = _PARTITION_NAMED.get(kind)
        if pattern is not None and (match := pattern.fullmatch(name)) is not None:
            return match.group(1) in self.partitions
        return False


class _Canonical:
    """A path with its folder resolved (symlinks, ``..``), as one pass compares paths.

    The registry records paths as the settings spelled them when each row was written; a
    tier reached through another name since (a symlink, a new mount point) must not make
    every registered product look like an orphan. The folder is resolved, not the entry
    itself, so an entry is compared as the name it has in its folder; folders are resolved
    once each (products share a handful of folders).
    """

    def __init__(self) -> None:
        self._folders: dict[str, str] = {}

    def __call__(self, path: str | Path) -> str:
        folder, name = os.path.split(os.path.normpath(str(path)))
        resolved = self._folders.get(folder)
        if resolved is None:
            resolved = self._folders[folder] = os.path.realpath(folder)
        return os.path.join(resolved, name)


def _orphans(
    settings: Settings, registry: Registry, born_before: float, report: GcReport
) -> list[Path]:
    """Return the product units no row accounts for, last modified before ``born_before``.

    Younger ones go to ``report.young``, folders overlapping another tier to its problems.
    The registry is read again once the walk has found candidates, so a product registered
    while the folders were walked is not taken for an orphan.
    """
    registered = _Registered.read(registry)
    canonical = _Canonical()
    candidates: list[tuple[Path, str, str]] = []
    for kind in PRODUCT_KINDS:
        folder = kind_folder(settings, kind)
        overlap = _overlapping_tier(settings, folder)
        if overlap is not None:
            report.problems.append((folder, f"{kind} folder overlaps the {overlap} tier; skipped"))
            continue
        for unit in _units(folder):
            text = canonical(unit)
            if registered.accounts_for(text, unit.name, kind):
                continue
            if _newest_mtime(unit) > born_before:
                report.young.append(unit)
                continue
            candidates.append((unit, text, kind))
    if not candidates:
        return []
    registered = _Registered.read(registry)
    return [
        unit
        for unit, text, kind in candidates
        if not registered.accounts_for(text, unit.name, kind)
    ]


def _quarantine_bases(settings: Settings) -> list[Path]:
    """Return the folders holding a ``.quarantine``: the products root, the MS folder if apart."""
    bases = [settings.products_dir]
    if not settings.output_dir.is_relative_to(settings.products_dir):
        bases.append(settings.output_dir)
    return bases


def _quarantine_target(settings: Settings, unit: Path, today: date) -> Path:
    """Return where ``unit`` goes in quarantine: its path relative to its base, under the day."""
    for base in _quarantine_bases(settings):
        if unit.is_relative_to(base):
            return base / QUARANTINE / today.isoformat() / unit.relative_to(base)
    raise ValueError(f"{unit} is on no products folder")  # _units only yields those


def _quarantine(settings: Settings, unit: Path, today: date, report: GcReport) -> None:
    """Move ``unit`` into today's quarantine folder (one rename, never replacing)."""
    first = target = _quarantine_target(settings, unit, today)
    n = 0
    while os.path.lexists(target):  # the same name quarantined twice in one day
        n += 1
        target = first.with_name(f"{first.name}~{n}")
    if not report.dry_run:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            rename_no_replace(unit, target)
        except OSError as exc:
            report.problems.append((unit, f"could not quarantine: {exc}"))
            return
    report.quarantined.append((unit, target))


def _purge_expired(folder: Path, today: date, grace: int, report: GcReport) -> None:
    """Remove the quarantine day folders whose grace period has passed."""
    try:
        days = sorted(os.listdir(folder))
    except OSError:
        return
    for name in days:
        try:
            day = date.fromisoformat(name)
        except ValueError:
            continue  # not a day folder of ours
        if day + timedelta(days=1 + grace) <= today:
            if not report.dry_run:
                remove_path(folder / name)
            report.removed.append(folder / name)


def _units(folder: Path) -> Iterator[Path]:
    """Yield the product units under ``folder``: files, CASA tables, flag versions.

    Hidden names are skipped at every level (temporaries in flight, the quarantine).
    """
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False) and not _is_unit_folder(path):
            yield from _units(path)
        else:
            yield path


def _is_unit_folder(path: Path) -> bool:
    """Return whether a folder is one product (a CASA table, flag versions), not a container."""
    return path.name.endswith(_COMPANION_SUFFIXES) or (path / "table.dat").exists()


def _ancestors(paths: frozenset[str]) -> set[str]:
    """Return every folder that holds a known path (a unit holding one is never moved)."""
    holders: set[str] = set()
    for path in paths:
        parent = os.path.dirname(path)
        while parent and parent not in holders and parent != os.path.dirname(parent):
            holders.add(parent)
            parent = os.path.dirname(parent)
    return holders


def _inside(path: str, folders: frozenset[str]) -> bool:
    """Return whether a folder that encloses ``path`` is one of ``folders``.

    A registered folder that is not a CASA table (no ``table.dat`` at its top) is walked
    into; what it holds is registered with it.
    """
    parent = os.path.dirname(path)
    while parent != os.path.dirname(parent):
        if parent in folders:
            return True
        parent = os.path.dirname(parent)
    return False


def _newest_mtime(unit: Path) -> float:
    """Return the newest modification time of ``unit`` and, for a folder, its entries."""
    try:
        newest = os.lstat(unit).st_mtime
    except OSError:
        return float("inf")  # vanished meanwhile: someone is working on it
    if unit.is_dir() and not unit.is_symlink():
        try:
            for entry in os.scandir(unit):
                newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
        except OSError:
            return float("inf")
    return newest


def _overlapping_tier(settings: Settings, folder: Path) -> str | None:
    """Return the tier ``folder`` overlaps that no product may be collected on, or None."""
    for tier in _FOREIGN_TIERS:
        root = tier_root(settings, tier)
        if is_within(folder, root) or is_within(root, folder):
            return tier.value
    if is_within(settings.db_path, folder):
        return Tier.HDD_STATE.value
    return None


def _mark_missing(registry: Registry, now: float, report: GcReport) -> None:
    """Mark the rows whose file is gone, clear the marks of files back; report both."""
    marks: list[tuple[str, str, float | None]] = []
    for row in product_rows(registry):
        present = os.path.lexists(row.path)
        if present and row.missing_since is not None:
            marks.append((row.table, row.path, None))
            report.found_again += 1
        elif not present:
            since = row.missing_since
            if since is None:
                since = now
                marks.append((row.table, row.path, now))
                report.newly_missing += 1
            report.missing.append(ProductRow(row.table, row.path, since))
    if marks and not report.dry_run:
        set_missing(registry, marks)
