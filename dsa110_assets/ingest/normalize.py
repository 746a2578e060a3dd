"""Filename normalization on ingest: every subband of a group gets the canonical timestamp.

Files are taken in arrival order (modification time, then name), so the first subband to
arrive gives the group its ``group_id``; each later file joins the nearest existing group
within the tolerance (see :mod:`dsa110_assets.ingest.clustering`) and is renamed to
``{group_id}_sb{XX}.hdf5`` in the same folder.

Nothing is ever overwritten or deleted:

* a name that does not parse is left alone and reported (``unmatched``);
* ``*_incomplete.hdf5`` and files modified less than ``settle_s`` ago are still being written
  and are left for a later pass (``incomplete`` / ``still_writing``);
* symlinks and paths outside the input folder are refused (``refused``);
* a second file for a (group, subband) that already has one keeps its name and is reported and
  recorded as a ``conflict``;
* renames use ``RENAME_NOREPLACE``, and a file another process moved first is ``vanished``.

With a registry, the whole pass runs inside one ``BEGIN IMMEDIATE`` transaction: two
normalizers on the same folder serialize, each sees the other's result, and the database work
is a handful of batched statements however many files there are.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dsa110_assets.ingest.clustering import GroupIndex
from dsa110_assets.naming import (
    InvalidSubbandName,
    epoch_to_group_id,
    group_id_to_epoch,
    is_incomplete_name,
    parse_subband_filename,
    subband_filename,
)
from dsa110_assets.registry import Registry, promote_complete_groups
from dsa110_assets.safe_fs import rename_no_replace, same_file

DEFAULT_TOLERANCE_S = 60.0

#: Actions a file can receive, in the order reports list them.
ACTIONS = (
    "renamed",
    "unchanged",
    "registered",
    "conflict",
    "unmatched",
    "incomplete",
    "still_writing",
    "refused",
    "vanished",
)
_SKIPPED = ("unmatched", "incomplete", "still_writing", "refused")


@dataclass(slots=True)
class FileOutcome:
    """What happened to one file."""

    name: str
    action: str
    group_id: str | None = None
    subband: int | None = None
    new_name: str | None = None
    reason: str | None = None


@dataclass
class IngestReport:
    """Outcomes of one normalization pass; :meth:`stats` gives the documented dict."""

    directory: Path
    dry_run: bool
    outcomes: list[FileOutcome] = field(default_factory=list)
    groups: set[str] = field(default_factory=set)
    groups_created: list[str] = field(default_factory=list)
    groups_completed: list[str] = field(default_factory=list)
    files_registered: int = 0
    db_round_trips: int = 0
    elapsed_s: float = 0.0

    def count(self, action: str) -> int:
        return sum(1 for o in self.outcomes if o.action == action)

    def stats(self, *, details: bool = False) -> dict[str, Any]:
        counts = {a: 0 for a in ACTIONS}
        for outcome in self.outcomes:
            counts[outcome.action] += 1
        stats: dict[str, Any] = {
            "directory": str(self.directory),
            "dry_run": self.dry_run,
            "files_scanned": len(self.outcomes),
            "files_renamed": counts["renamed"],
            "files_unchanged": counts["unchanged"] + counts["registered"],
            "files_registered": self.files_registered,
            "groups": len(self.groups),
            "groups_created": len(self.groups_created),
            "groups_completed": len(self.groups_completed),
            "skipped": sum(counts[a] for a in _SKIPPED),
            "conflicts": counts["conflict"],
            "unmatched": counts["unmatched"],
            "incomplete": counts["incomplete"],
            "still_writing": counts["still_writing"],
            "refused": counts["refused"],
            "vanished": counts["vanished"],
            "db_round_trips": self.db_round_trips,
            "elapsed_s": round(self.elapsed_s, 4),
        }
        if details:
            stats["files"] = [
                {k: v for k, v in asdict(o).items() if v is not None} for o in self.outcomes
            ]
        return stats


@dataclass(slots=True)
class _Candidate:
    name: str
    epoch: int
    subband: int
    mtime: float
    size: int


def normalize_subband_path(path: str | os.PathLike[str], group_id: str, *, dry_run=False) -> Path:
    """Rename one subband file to ``{group_id}_sb{XX}.hdf5`` in its folder.

    Idempotent: a file that already has its canonical name is returned unchanged.

    Raises
    ------
    InvalidSubbandName
        The file name does not parse.
    FileExistsError
        Another file already holds the canonical name; neither file is touched.
    """
    path = Path(path)
    parsed = parse_subband_filename(path.name)
    target = path.with_name(subband_filename(group_id, parsed.subband))
    if target.name != path.name and not dry_run:
        _rename_into_place(str(path), str(target))
    return target


def _rename_into_place(src: str, dst: str) -> None:
    """Rename without replacing; finish an interrupted link+unlink of the same inode."""
    try:
        rename_no_replace(src, dst)
    except FileExistsError:
        if not same_file(Path(src), Path(dst)):
            raise
        os.unlink(src)  # both names are one inode: drop the old name only


def normalize_directory(
    directory: str | os.PathLike[str],
    cluster_tolerance_s: float = DEFAULT_TOLERANCE_S,
    dry_run: bool = False,
    *,
    registry: Registry | None = None,
    settle_s: float = 0.0,
    now: float | None = None,
    details: bool = False,
    expected_subbands: int = 16,
) -> dict[str, Any]:
    """Normalize every subband file directly inside ``directory`` (not sub-folders).

    Parameters
    ----------
    directory
        The input folder.
    cluster_tolerance_s
        A file joins a group whose canonical time is within this many seconds.
    dry_run
        Report what would happen; rename and write nothing.
    registry
        Also register groups and files (and record conflicts). Existing groups in the
        registry take part in the clustering.
    settle_s
        Files modified less than this long ago are still being written and are skipped.
    details
        Include a per-file ``files`` list in the result.
    expected_subbands
        Subbands a new group waits for before it is ``pending``.

    Returns
    -------
    dict
        ``files_scanned``, ``files_renamed``, ``groups``, ``skipped``, ``conflicts`` and the
        other counts of :meth:`IngestReport.stats`.
    """
    report = ingest_directory(
        directory,
        registry=registry,
        cluster_tolerance_s=cluster_tolerance_s,
        dry_run=dry_run,
        settle_s=settle_s,
        now=now,
        expected_subbands=expected_subbands,
    )
    return report.stats(details=details)


def normalize_subband_on_ingest(
    path: str | os.PathLike[str],
    registry: Registry,
    *,
    input_dir: str | os.PathLike[str] | None = None,
    cluster_tolerance_s: float = DEFAULT_TOLERANCE_S,
    settle_s: float = 0.0,
    now: float | None = None,
    expected_subbands: int = 16,
) -> FileOutcome:
    """Streaming entry point: normalize and register one newly arrived file.

    ``input_dir``, when given, is the folder the file must be directly inside; anything
    else (another folder, ``..`` tricks, a symlink) is refused and left alone.
    """
    path = Path(path)
    directory = path.parent
    if input_dir is not None and directory.resolve() != Path(input_dir).resolve():
        return FileOutcome(path.name, "refused", reason=f"outside the input folder {input_dir}")
    report = ingest_directory(
        directory,
        names=[path.name],
        registry=registry,
        cluster_tolerance_s=cluster_tolerance_s,
        settle_s=settle_s,
        now=now,
        expected_subbands=expected_subbands,
    )
    return report.outcomes[0]


def ingest_directory(
    directory: str | os.PathLike[str],
    *,
    names: Iterable[str] | None = None,
    registry: Registry | None = None,
    cluster_tolerance_s: float = DEFAULT_TOLERANCE_S,
    dry_run: bool = False,
    settle_s: float = 0.0,
    now: float | None = None,
    expected_subbands: int = 16,
) -> IngestReport:
    """The normalization pass behind the public functions.

    ``names`` restricts the pass to those entries of ``directory`` (a sensor's new files);
    otherwise the whole folder is scanned.
    """
    started = time.perf_counter()
    directory = Path(directory).resolve()
    if not directory.is_dir():
        raise NotADirectoryError(f"input folder {directory} does not exist or is not a folder")
    report = IngestReport(directory=directory, dry_run=dry_run)
    trips_before = registry.round_trips if registry is not None else 0
    if registry is None:
        _run_pass(
            report,
            directory,
            names,
            None,
            cluster_tolerance_s,
            dry_run,
            settle_s,
            now,
            expected_subbands,
        )
    else:
        # A dry run only reads, so a deferred transaction suffices and takes no write lock.
        with registry.transaction(write=not dry_run):
            _run_pass(
                report,
                directory,
                names,
                registry,
                cluster_tolerance_s,
                dry_run,
                settle_s,
                now,
                expected_subbands,
            )
        if not dry_run and report.groups:
            report.groups_completed = promote_complete_groups(registry, sorted(report.groups))
        report.db_round_trips = registry.round_trips - trips_before
    report.elapsed_s = time.perf_counter() - started
    return report


def _scan(
    report: IngestReport,
    directory: Path,
    names: Iterable[str] | None,
    settle_s: float,
    now: float,
) -> tuple[list[_Candidate], set[str] | None]:
    """Classify entries; return parseable, settled regular files in arrival order."""
    candidates: list[_Candidate] = []
    on_disk: set[str] | None = None
    if names is None:
        entries = []
        with os.scandir(directory) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    continue
                entries.append((entry.name, entry))
        on_disk = {name for name, _ in entries}
    else:
        entries = [(name, None) for name in names]

    for name, entry in entries:
        outcome = report.outcomes
        if os.sep in name or name in ("", ".", ".."):
            outcome.append(FileOutcome(name, "refused", reason="not a plain file name"))
            continue
        if is_incomplete_name(name):
            outcome.append(FileOutcome(name, "incomplete", reason="correlator still writing"))
            continue
        try:
            st = entry.stat(follow_symlinks=False) if entry else os.lstat(directory / name)
        except FileNotFoundError:
            outcome.append(FileOutcome(name, "vanished", reason="gone before it was read"))
            continue
        if stat.S_ISLNK(st.st_mode):
            outcome.append(FileOutcome(name, "refused", reason="symlinks are not ingested"))
            continue
        if not stat.S_ISREG(st.st_mode):
            outcome.append(FileOutcome(name, "refused", reason="not a regular file"))
            continue
        try:
            parsed = parse_subband_filename(name)
        except InvalidSubbandName as exc:
            outcome.append(FileOutcome(name, "unmatched", reason=str(exc)))
            continue
        if now - st.st_mtime < settle_s:
            outcome.append(
                FileOutcome(
                    name,
                    "still_writing",
                    subband=parsed.subband,
                    reason=f"modified {now - st.st_mtime:.1f} s ago (< {settle_s:g} s)",
                )
            )
            continue
        candidates.append(_Candidate(name, parsed.epoch_s, parsed.subband, st.st_mtime, st.st_size))
    candidates.sort(key=lambda c: (c.mtime, c.epoch, c.name))
    return candidates, on_disk


def _run_pass(
    report: IngestReport,
    directory: Path,
    names: Iterable[str] | None,
    registry: Registry | None,
    tolerance_s: float,
    dry_run: bool,
    settle_s: float,
    now: float | None,
    expected_subbands: int,
) -> None:
    now = time.time() if now is None else now
    candidates, on_disk = _scan(report, directory, names, settle_s, now)
    if not candidates:
        return

    # Existing groups and slots near these files (one query each), so that canonical groups
    # from earlier passes keep their ids and slots already filled are respected.
    index = GroupIndex()
    registered: dict[tuple[str, int], tuple[str, str | None]] = {}
    known_groups: set[str] = set()
    if registry is not None:
        lo = epoch_to_group_id(min(c.epoch for c in candidates) - tolerance_s - 1)
        hi = epoch_to_group_id(max(c.epoch for c in candidates) + tolerance_s + 1)
        for (gid,) in registry.execute(
            "SELECT group_id FROM processing_queue WHERE group_id BETWEEN ? AND ?", (lo, hi)
        ):
            known_groups.add(gid)
        index = GroupIndex([group_id_to_epoch(g) for g in known_groups])
        for gid, sb, path, original in registry.execute(
            "SELECT group_id, subband_idx, path, original_name FROM subband_files"
            " WHERE group_id BETWEEN ? AND ?",
            (lo, hi),
        ):
            registered[(gid, sb)] = (path, original)

    folder = str(directory)
    exists = (
        on_disk.__contains__ if on_disk is not None else lambda n: os.path.lexists(f"{folder}/{n}")
    )
    claimed: dict[tuple[str, int], str] = {}  # slot -> path of the file holding it
    new_groups: dict[str, float] = {}  # group_id -> received_at (first arrival)
    rows: list[tuple[Any, ...]] = []
    conflicts: list[tuple[Any, ...]] = []
    gid_cache: dict[int, str] = {}

    for c in candidates:
        group_epoch, created = index.assign(c.epoch, tolerance_s)
        gid = gid_cache.get(group_epoch) or gid_cache.setdefault(
            group_epoch, epoch_to_group_id(group_epoch)
        )
        if created and gid not in known_groups:
            new_groups[gid] = c.mtime
        target = subband_filename(gid, c.subband)
        key = (gid, c.subband)
        src_path = f"{folder}/{c.name}"
        dst_path = f"{folder}/{target}"
        outcome = FileOutcome(c.name, "unchanged", gid, c.subband, target)

        holder = claimed.get(key)
        slot = registered.get(key)
        if holder is None and slot is not None:
            slot_path, slot_original = slot
            if slot_path == src_path:
                outcome.action = "unchanged"  # normalized and registered before
                report.outcomes.append(outcome)
                report.groups.add(gid)
                claimed[key] = dst_path
                continue
            if not (slot_path == dst_path and slot_original == c.name):
                holder = slot_path  # another file holds the slot
            # else: an earlier pass registered this very file but stopped before renaming.
        elif holder is None and c.name != target and exists(target):
            holder = dst_path
        if holder is not None:
            outcome.action = "conflict"
            outcome.reason = f"({gid}, sb{c.subband:02d}) already held by {Path(holder).name}"
            conflicts.append((src_path, gid, c.subband, str(holder), outcome.reason, now))
            report.outcomes.append(outcome)
            continue

        if c.name != target:
            outcome.action = "renamed"
            if not dry_run:
                try:
                    _rename_into_place(src_path, dst_path)
                except FileExistsError:
                    outcome.action = "conflict"
                    outcome.reason = f"{target} appeared while renaming; left alone"
                    conflicts.append((src_path, gid, c.subband, dst_path, outcome.reason, now))
                    report.outcomes.append(outcome)
                    continue
                except FileNotFoundError:
                    outcome.action = "vanished"
                    outcome.reason = "moved by another process before it was renamed"
                    report.outcomes.append(outcome)
                    continue
                if on_disk is not None:
                    on_disk.discard(c.name)
                    on_disk.add(target)
        elif slot is None and registry is not None:
            outcome.action = "registered"
        claimed[key] = dst_path
        report.groups.add(gid)
        report.outcomes.append(outcome)
        if slot is None:
            rows.append((gid, c.subband, dst_path, c.name, c.size, now))

    report.groups_created = sorted(new_groups)
    if registry is None or dry_run:
        return
    registry.conn.executemany(
        "INSERT OR IGNORE INTO processing_queue(group_id, state, received_at, last_update,"
        " expected_subbands, retry_count) VALUES (?, 'collecting', ?, ?, ?, 0)",
        [(gid, received, now, expected_subbands) for gid, received in new_groups.items()],
    )
    registry.conn.executemany(
        "INSERT INTO subband_files(group_id, subband_idx, path, original_name, size_bytes,"
        " registered_at) VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )
    report.files_registered = len(rows)
    touched = sorted(report.groups - set(new_groups))
    if touched:
        registry.conn.executemany(
            "UPDATE processing_queue SET last_update = ? WHERE group_id = ?",
            [(now, gid) for gid in touched],
        )
    if conflicts:
        registry.conn.executemany(
            "INSERT OR IGNORE INTO ingest_conflicts(path, group_id, subband_idx, existing_path,"
            " reason, detected_at) VALUES (?, ?, ?, ?, ?, ?)",
            conflicts,
        )
