"""Filename normalization on ingest: every subband of a group gets the canonical timestamp.

Files are taken in arrival order (modification time, then name). Each file's content time
(the start of its ``time_array``, :mod:`dsa110_assets.ingest.content`) says which observation
it holds; the file joins that observation's group (see :mod:`dsa110_assets.ingest.clustering`:
membership does not depend on arrival order), the first file of an observation gives the
group its ``group_id``, and each file is renamed to ``{group_id}_sb{XX}.hdf5`` in the same
folder.

Nothing is ever overwritten or deleted, and every problem belongs to one file only: it is
reported for that file (and, with a registry, recorded in ``ingest_rejects`` or
``ingest_conflicts``) while the rest of the pass goes on:

* a name that does not parse (including out-of-range times) is left alone (``unmatched``);
* a file that cannot be a subband yet (0 bytes, not HDF5, no readable ``time_array``) is
  ``unreadable``: it takes no slot, and is looked at again on later passes;
* a file whose content starts more than
  :data:`~dsa110_assets.ingest.content.NAME_TIME_TOLERANCE_S` from the time in its name holds
  another observation than its name says: a ``mismatch``, refused with a message naming it;
* anything unexpected while handling one file (a failed rename, say) is an ``error`` for it;
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

import math
import os
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dsa110_assets.ingest.clustering import GroupIndex
from dsa110_assets.ingest.content import (
    NAME_TIME_TOLERANCE_S,
    ContentTime,
    UnreadableSubband,
    name_disagreement,
    read_content_time,
)
from dsa110_assets.naming import (
    InvalidSubbandName,
    clamp_epoch,
    epoch_to_group_id,
    group_id_to_epoch,
    is_incomplete_name,
    parse_subband_filename,
    subband_filename,
)
from dsa110_assets.registry import Registry, promote_complete_groups
from dsa110_assets.safe_fs import rename_no_replace, same_file

DEFAULT_TOLERANCE_S = 60.0
#: An unreadable file modified less than this long ago may still be being written: the
#: sensor keeps looking at it every tick (``FileOutcome.retry``) even if it does not change.
UNREADABLE_RETRY_S = 900.0

#: Reads a file's content time; raises :class:`UnreadableSubband`. Injectable for tests of
#: the ingest rules on files whose content is made by hand.
ContentReader = Callable[[str], ContentTime]

#: Actions that leave a file where it is, unregistered (counted as ``skipped``).
_SKIPPED = (
    "unmatched",
    "incomplete",
    "still_writing",
    "refused",
    "unreadable",
    "mismatch",
    "error",
)
#: Actions a file can receive, in the order reports list them.
ACTIONS = ("renamed", "unchanged", "registered", "conflict", *_SKIPPED, "vanished")


@dataclass(slots=True)
class FileOutcome:
    """What happened to one file."""

    name: str
    action: str
    group_id: str | None = None
    subband: int | None = None
    new_name: str | None = None
    reason: str | None = None
    retry: bool | None = None  # True: look again next tick even if the file does not change


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
            "unreadable": counts["unreadable"],
            "mismatch": counts["mismatch"],
            "errors": counts["error"],
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
    content_reader: ContentReader | None = None,
) -> dict[str, Any]:
    """Normalize every subband file directly inside ``directory`` (not sub-folders).

    Parameters
    ----------
    directory
        The input folder.
    cluster_tolerance_s
        A file joins the group whose observation start (content time) is within this many
        seconds of its own; finite and >= 0 (observations are 309.2 s apart, so anything
        below that separates them).
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
    content_reader
        Reads a file's content time (default :func:`read_content_time`).

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
        content_reader=content_reader,
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
    content_reader: ContentReader | None = None,
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
        content_reader=content_reader,
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
    content_reader: ContentReader | None = None,
) -> IngestReport:
    """The normalization pass behind the public functions.

    ``names`` restricts the pass to those entries of ``directory`` (a sensor's new files);
    otherwise the whole folder is scanned.

    Raises
    ------
    ValueError
        The tolerance or settle time is not a finite number >= 0 (checked before anything is
        read, since a NaN would silently turn a rule off).
    NotADirectoryError
        ``directory`` is not a folder.
    """
    _check_numbers(cluster_tolerance_s, settle_s)
    read = read_content_time if content_reader is None else content_reader
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
            read,
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
                read,
            )
        if not dry_run and report.groups:
            report.groups_completed = promote_complete_groups(registry, sorted(report.groups))
        report.db_round_trips = registry.round_trips - trips_before
    report.elapsed_s = time.perf_counter() - started
    return report


def _check_numbers(tolerance_s: float, settle_s: float) -> None:
    """Refuse tolerances that would silently disable a rule (NaN, negative, infinite)."""
    if not (isinstance(tolerance_s, int | float) and math.isfinite(tolerance_s)):
        raise ValueError(f"cluster tolerance {tolerance_s!r} s must be a finite number")
    if tolerance_s < 0:
        raise ValueError(f"cluster tolerance {tolerance_s!r} s must be >= 0")
    if not (isinstance(settle_s, int | float) and math.isfinite(settle_s) and settle_s >= 0):
        raise ValueError(f"settle time {settle_s!r} s must be a finite number >= 0")


def _scan(
    report: IngestReport,
    directory: Path,
    names: Iterable[str] | None,
    settle_s: float,
    now: float,
) -> tuple[list[_Candidate], set[str] | None]:
    """Classify entries; return parseable, settled regular files in arrival order.

    Each entry is classified on its own: whatever goes wrong with one (a name that cannot be
    parsed or formatted, a stat that fails) becomes that entry's outcome, never the pass's.
    """
    candidates: list[_Candidate] = []
    on_disk: set[str] | None = None
    if names is None:
        entries = []
        with os.scandir(directory) as it:
            for entry in it:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        continue
                except OSError:
                    pass  # classified below by lstat
                entries.append((entry.name, entry))
        on_disk = {name for name, _ in entries}
    else:
        entries = [(name, None) for name in names]

    for name, entry in entries:
        try:
            candidate = _classify(report, directory, name, entry, settle_s, now)
        except Exception as exc:  # one file's problem stays that file's
            report.outcomes.append(FileOutcome(name, "error", reason=_describe(exc)))
            continue
        if candidate is not None:
            candidates.append(candidate)
    candidates.sort(key=lambda c: (c.mtime, c.epoch, c.name))
    return candidates, on_disk


def _classify(
    report: IngestReport,
    directory: Path,
    name: str,
    entry: os.DirEntry[str] | None,
    settle_s: float,
    now: float,
) -> _Candidate | None:
    outcome = report.outcomes
    if not isinstance(name, str) or os.sep in name or name in ("", ".", ".."):
        outcome.append(FileOutcome(str(name), "refused", reason="not a plain file name"))
        return None
    if is_incomplete_name(name):
        outcome.append(FileOutcome(name, "incomplete", reason="correlator still writing"))
        return None
    try:
        st = entry.stat(follow_symlinks=False) if entry else os.lstat(directory / name)
    except FileNotFoundError:
        outcome.append(FileOutcome(name, "vanished", reason="gone before it was read"))
        return None
    if stat.S_ISLNK(st.st_mode):
        outcome.append(FileOutcome(name, "refused", reason="symlinks are not ingested"))
        return None
    if not stat.S_ISREG(st.st_mode):
        outcome.append(FileOutcome(name, "refused", reason="not a regular file"))
        return None
    try:
        parsed = parse_subband_filename(name)
        epoch = parsed.epoch_s
    except (InvalidSubbandName, ValueError, OverflowError) as exc:
        outcome.append(FileOutcome(name, "unmatched", reason=str(exc)))
        return None
    if now - st.st_mtime < settle_s:
        outcome.append(
            FileOutcome(
                name,
                "still_writing",
                subband=parsed.subband,
                reason=f"modified {now - st.st_mtime:.1f} s ago (< {settle_s:g} s)",
            )
        )
        return None
    return _Candidate(name, epoch, parsed.subband, st.st_mtime, st.st_size)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _group_starts(
    registry: Registry, groups: dict[str, float | None], read: ContentReader
) -> list[tuple[float, str]]:
    """Observation starts of registry groups; older rows (NULL) read from one of their files.

    A group whose files cannot be read any more keeps its group_id's time as its start (the
    name of its first file, honest to within the name tolerance).
    """
    result: list[tuple[float, str]] = []
    for gid, start in groups.items():
        if start is None:
            for (path,) in registry.execute(
                "SELECT path FROM subband_files WHERE group_id = ? ORDER BY subband_idx", (gid,)
            ):
                try:
                    start = read(path).start_s
                    break
                except UnreadableSubband:
                    continue
        result.append((float(group_id_to_epoch(gid)) if start is None else start, gid))
    return result


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
    read: ContentReader,
) -> None:
    now = time.time() if now is None else now
    candidates, on_disk = _scan(report, directory, names, settle_s, now)
    if not candidates:
        return

    # Existing groups and slots near these files (one query each), so that groups from
    # earlier passes keep their ids and slots already filled are respected. A group's id is
    # within the name tolerance of its observation start, and so is each file's name: the
    # window covers every group a file could join.
    reach = 2 * NAME_TIME_TOLERANCE_S + tolerance_s + 1
    registered: dict[tuple[str, int], tuple[str, str | None]] = {}
    registered_paths: dict[str, tuple[str, int]] = {}
    known: dict[str, float | None] = {}
    if registry is not None:
        lo = epoch_to_group_id(clamp_epoch(min(c.epoch for c in candidates) - reach))
        hi = epoch_to_group_id(clamp_epoch(max(c.epoch for c in candidates) + reach))
        for gid, start in registry.execute(
            "SELECT group_id, obs_start FROM processing_queue WHERE group_id BETWEEN ? AND ?",
            (lo, hi),
        ):
            known[gid] = start
        for gid, sb, path, original in registry.execute(
            "SELECT group_id, subband_idx, path, original_name FROM subband_files"
            " WHERE group_id BETWEEN ? AND ?",
            (lo, hi),
        ):
            registered[(gid, sb)] = (path, original)
            registered_paths[path] = (gid, sb)
    index = GroupIndex(_group_starts(registry, known, read) if registry is not None else [])

    folder = str(directory)
    exists = (
        on_disk.__contains__ if on_disk is not None else lambda n: os.path.lexists(f"{folder}/{n}")
    )
    claimed: dict[tuple[str, int], str] = {}  # slot -> path of the file holding it
    new_groups: dict[str, tuple[float, float]] = {}  # group_id -> (received_at, obs_start)
    rows: list[tuple[Any, ...]] = []
    conflicts: list[tuple[Any, ...]] = []
    rejects: list[tuple[Any, ...]] = []

    for c in candidates:
        src_path = f"{folder}/{c.name}"
        try:
            outcome, created = _place(
                c,
                src_path,
                folder,
                index,
                tolerance_s,
                registered,
                registered_paths,
                claimed,
                exists,
                read,
                now,
            )
            if created and outcome.group_id is not None:
                new_groups[outcome.group_id] = (c.mtime, index.start_of(outcome.group_id))
            if outcome.action == "known":
                outcome.action = "unchanged"  # normalized and registered before
            elif outcome.action == "unchanged":
                _finish(outcome, c, src_path, folder, registry, dry_run, on_disk)
        except Exception as exc:  # one file's problem stays that file's
            outcome = FileOutcome(c.name, "error", subband=c.subband, reason=_describe(exc))
        report.outcomes.append(outcome)
        gid = outcome.group_id
        if outcome.action in ("unreadable", "mismatch", "error"):
            rejects.append((src_path, c.subband, outcome.action, outcome.reason, now))
        elif outcome.action == "conflict":
            assert gid is not None
            holder = outcome.new_name or ""
            outcome.new_name = subband_filename(gid, c.subband)
            conflicts.append((src_path, gid, c.subband, holder, outcome.reason, now))
        elif outcome.action in ("renamed", "unchanged", "registered"):
            assert gid is not None and outcome.new_name is not None
            dst_path = f"{folder}/{outcome.new_name}"
            claimed[(gid, c.subband)] = dst_path
            report.groups.add(gid)
            if (gid, c.subband) not in registered:
                rows.append((gid, c.subband, dst_path, c.name, c.size, now, src_path))

    report.groups_created = sorted(g for g in new_groups if g in report.groups)
    if registry is None or dry_run:
        return
    registry.conn.executemany(
        "INSERT OR IGNORE INTO processing_queue(group_id, state, received_at, last_update,"
        " expected_subbands, retry_count, obs_start) VALUES (?, 'collecting', ?, ?, ?, 0, ?)",
        [
            (gid, received, now, expected_subbands, start)
            for gid, (received, start) in new_groups.items()
            if gid in report.groups
        ],
    )
    registry.conn.executemany(
        "INSERT INTO subband_files(group_id, subband_idx, path, original_name, size_bytes,"
        " registered_at) VALUES (?, ?, ?, ?, ?, ?)",
        [row[:6] for row in rows],
    )
    report.files_registered = len(rows)
    # A file refused earlier (say, while it was still empty) that registers now is no longer
    # a reject, under its arrival name or its canonical one.
    registry.conn.executemany(
        "DELETE FROM ingest_rejects WHERE path IN (?, ?)", [(r[2], r[6]) for r in rows]
    )
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
    if rejects:
        registry.conn.executemany(
            "INSERT INTO ingest_rejects(path, subband_idx, kind, reason, first_seen, last_seen)"
            " VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT(path) DO UPDATE SET"
            " subband_idx = excluded.subband_idx, kind = excluded.kind,"
            " reason = excluded.reason, last_seen = excluded.last_seen",
            rejects,
        )


def _place(
    c: _Candidate,
    src_path: str,
    folder: str,
    index: GroupIndex,
    tolerance_s: float,
    registered: dict[tuple[str, int], tuple[str, str | None]],
    registered_paths: dict[str, tuple[str, int]],
    claimed: dict[tuple[str, int], str],
    exists: Callable[[str], bool],
    read: ContentReader,
    now: float,
) -> tuple[FileOutcome, bool]:
    """Decide where one file belongs; no side effects except on ``index``.

    Returns the outcome and whether a new group was created for it. The action is
    ``unchanged`` with ``new_name`` the canonical name (to be renamed or registered by
    :func:`_finish`), or ``unreadable``, ``mismatch`` or ``conflict`` (``new_name`` then
    holds the path of the file holding the slot). A path that holds its slot already (an
    earlier pass registered it) is ``known``, and is not read again.
    """
    known_slot = registered_paths.get(src_path)
    if known_slot is not None and known_slot not in claimed:
        gid, sb = known_slot
        return FileOutcome(c.name, "known", gid, sb, Path(src_path).name), False
    try:
        content = read(src_path)
    except UnreadableSubband as exc:
        young = now - c.mtime < UNREADABLE_RETRY_S
        reason = f"{c.name}: {exc}" + ("; will look again" if young else "")
        return FileOutcome(
            c.name, "unreadable", subband=c.subband, reason=reason, retry=young
        ), False
    disagreement = name_disagreement(c.epoch, content)
    if disagreement is not None:
        return FileOutcome(
            c.name, "mismatch", subband=c.subband, reason=f"{c.name}: {disagreement}"
        ), False
    gid, created = index.assign(content.start_s, tolerance_s, epoch_to_group_id(c.epoch))
    target = subband_filename(gid, c.subband)
    key = (gid, c.subband)
    dst_path = f"{folder}/{target}"
    holder = claimed.get(key)
    slot = registered.get(key)
    if holder is None and slot is not None:
        slot_path, slot_original = slot
        if not (slot_path == dst_path and slot_original == c.name):
            holder = slot_path  # another file holds the slot
        # else: an earlier pass registered this very file but stopped before renaming.
    elif holder is None and c.name != target and exists(target):
        if _holds_a_subband(dst_path, read):
            holder = dst_path
        else:
            # The canonical name is taken by a file that cannot be a subband (say, an empty
            # one): it must not block the real file, which registers under its own name.
            return FileOutcome(
                c.name,
                "unchanged",
                gid,
                c.subband,
                c.name,
                reason=f"{target} is held by a file that is not a subband; kept this name",
            ), created
    if holder is not None:
        return FileOutcome(
            c.name,
            "conflict",
            gid,
            c.subband,
            holder,
            reason=f"({gid}, sb{c.subband:02d}) already held by {Path(holder).name}",
        ), created
    return FileOutcome(c.name, "unchanged", gid, c.subband, target), created


def _holds_a_subband(path: str, read: ContentReader) -> bool:
    """Whether the file at ``path`` reads as a subband (anything but unreadable counts)."""
    try:
        read(path)
    except UnreadableSubband:
        return False
    except OSError:
        return True  # cannot tell: treat it as holding the name, never work around it
    return True


def _finish(
    outcome: FileOutcome,
    c: _Candidate,
    src_path: str,
    folder: str,
    registry: Registry | None,
    dry_run: bool,
    on_disk: set[str] | None,
) -> None:
    """Rename the file into its slot (unless it has its name already); set the action."""
    target = outcome.new_name
    assert target is not None and outcome.group_id is not None
    if c.name == target:
        outcome.action = "registered" if registry is not None else "unchanged"
        return
    outcome.action = "renamed"
    if dry_run:
        return
    try:
        _rename_into_place(src_path, f"{folder}/{target}")
    except FileExistsError:
        outcome.action = "conflict"
        outcome.reason = f"{target} appeared while renaming; left alone"
        return
    except FileNotFoundError:
        outcome.action = "vanished"
        outcome.reason = "moved by another process before it was renamed"
        return
    if on_disk is not None:
        on_disk.discard(c.name)
        on_disk.add(target)
