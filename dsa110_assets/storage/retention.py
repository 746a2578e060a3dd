"""Raw retention: finished groups' subband files move to the archive tier, verified.

Why. The storage document says the raw subbands in ``/data/incoming`` are "cleared after
conversion"; the input disk holds days, not years. Raw files are also the one thing that
cannot be made again, so "cleared" here means *moved to the cold tier*, and only once it is
sure that nothing still needs them where they are: the group is finished
(:mod:`dsa110_assets.registry.retention`: converted, products done, never a failed group) and
its observation is older than ``older_than_days`` (default 7). Each file goes to
``{archive}/raw/{YYYY-MM-DD}/{name}`` (the UTC date of its group), and its ``subband_files``
row follows it, so a reconversion reads it from there.

The order of one file makes every crash safe (there is always the original, or a verified
copy that the registry names):

1. the original is hashed (SHA-256, streamed) and copied to a hidden temporary name in the
   destination folder (``.{name}.archive-{pid}-{hex}``, on the archive's filesystem), fsynced;
2. the copy is hashed again, read back from disk rather than from the page cache where the
   kernel allows, and compared; a mismatch removes the copy and keeps the original;
3. the copy is renamed into place without replacing anything (``renameat2``), the folder fsynced;
4. the registry row is moved to the archive path (a compare-and-set on the row and on the
   group still being finished: a reprocess started meanwhile keeps its files in place);
5. only then is the original removed.

A run stopped after 3 finds the archived copy on the next run, verifies it against the
original and carries on from 4; one stopped after 4 leaves the original in the input folder,
which the next run verifies against the archive copy and removes; temporaries of dead runs
are swept. An archive copy that differs from its original is never trusted: both are left for
an operator and the file is reported.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dsa110_assets.naming import epoch_to_group_id, parse_subband_filename
from dsa110_assets.registry.connection import Registry
from dsa110_assets.registry.retention import (
    RawFile,
    archived_rows,
    files_to_archive,
    move_file_row,
)
from dsa110_assets.safe_fs import (
    copy_file_sparse,
    fsync_dir,
    is_within,
    remove_path,
    rename_no_replace,
    same_file,
    sweep_dead,
)
from dsa110_assets.settings import Settings
from dsa110_assets.storage.lifecycle_rules import (
    DAY_S,
    DEFAULT_OLDER_THAN_DAYS,
    OLDER_THAN_DAYS_RULE,
)

__all__ = [
    "DEFAULT_OLDER_THAN_DAYS",
    "OLDER_THAN_DAYS_RULE",
    "ArchiveReport",
    "ArchivedFile",
    "archive_folder",
    "archive_raw",
    "sha256_of",
]

_TEMP_KIND = "archive"

#: Called after each step of a file: ``("copied", temporary)``, ``("placed", archived)``,
#: ``("registered", archived)``, ``("removed", original)``; for progress, and for tests that
#: stop a run at a chosen point.
StepHook = Callable[[str, Path], None]


@dataclass(frozen=True)
class ArchivedFile:
    """One raw file archived (or, in a dry run, that would be)."""

    group_id: str
    subband_idx: int
    source: Path
    archived: Path
    bytes: int
    sha256: str | None  # None in a dry run (nothing is read)


@dataclass
class ArchiveReport:
    """What one :func:`archive_raw` pass did.

    Attributes
    ----------
    archived
        Files now on the archive tier, their registry row updated and original removed.
    finished
        Originals left by an interrupted run, verified against their archive copy and removed.
    problems
        ``(path, reason)`` of the files left where they were, and why.
    """

    horizon: str
    dry_run: bool = False
    archived: list[ArchivedFile] = field(default_factory=list)
    finished: list[Path] = field(default_factory=list)
    problems: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        """Bytes moved (or to move) to the archive."""
        return sum(f.bytes for f in self.archived)

    @property
    def groups(self) -> list[str]:
        """The groups whose files were archived, in order."""
        return sorted({f.group_id for f in self.archived})

    def summary(self) -> str:
        """Return one line: files, groups and bytes, leftovers finished, problems."""
        verb = "would archive" if self.dry_run else "archived"
        line = (
            f"raw retention (groups before {self.horizon}): {verb} {len(self.archived)} files"
            f" of {len(self.groups)} groups ({self.bytes} bytes)"
        )
        if self.finished:
            line += f"; {'would finish' if self.dry_run else 'finished'} {len(self.finished)}"
            line += " interrupted moves"
        if self.problems:
            line += f"; {len(self.problems)} files left in place with problems"
        return line


def archive_folder(settings: Settings, group_id: str) -> Path:
    """Return the archive folder of ``group_id``'s raw files: ``{archive}/raw/{YYYY-MM-DD}``."""
    return raw_root(settings) / group_id[:10]


def raw_root(settings: Settings) -> Path:
    """Return the archive tier's folder of raw subband files."""
    return settings.archive_dir / "raw"


def archive_raw(
    settings: Settings,
    registry: Registry,
    *,
    now: float,
    older_than_days: float = DEFAULT_OLDER_THAN_DAYS,
    dry_run: bool = False,
    on_step: StepHook | None = None,
) -> ArchiveReport:
    """Move the raw files of finished groups observed before ``now - older_than_days``.

    Parameters
    ----------
    settings
        Where the input and archive tiers are.
    registry
        The registry (read-only is enough for a dry run).
    now
        The current time, Unix seconds (injected: the age is measured from it).
    older_than_days
        Only groups observed at least this long before ``now`` (validated).
    dry_run
        Report what would move; read no file, change nothing.
    on_step
        Called after each step of each file (see :data:`StepHook`).

    Returns
    -------
    ArchiveReport

    Raises
    ------
    ValueError
        ``older_than_days`` is not a number in :data:`OLDER_THAN_DAYS_RULE`.
    """
    days = OLDER_THAN_DAYS_RULE.check(older_than_days, name="older_than_days")
    horizon = epoch_to_group_id(now - days * DAY_S)
    prefix = str(raw_root(settings)) + os.sep
    report = ArchiveReport(horizon=horizon, dry_run=dry_run)
    if is_within(raw_root(settings), settings.input_dir) or is_within(
        settings.input_dir, raw_root(settings)
    ):
        # An archive inside the input folder (or around it) could name an original as its
        # own copy; nothing is moved until the tiers are apart.
        report.problems.append(
            (raw_root(settings), f"the archive overlaps the input folder {settings.input_dir}")
        )
        return report
    hook = on_step or (lambda _step, _path: None)
    for row in files_to_archive(registry, horizon, prefix):
        target = archive_folder(settings, row.group_id) / Path(row.path).name
        try:
            if dry_run:
                _plan_one(row, target, report)
            else:
                _archive_one(registry, row, target, horizon, report, hook)
        except OSError as exc:  # unreadable, vanished, disk full: this file only
            report.problems.append((Path(row.path), f"left in place: {exc}"))
    _finish_interrupted(settings, registry, horizon, prefix, report, hook)
    return report


def sha256_of(path: Path, *, uncached: bool = False) -> str:
    """Return the SHA-256 of a file, read in chunks (never whole into memory).

    ``uncached`` first asks the kernel to drop the file's clean pages, so a copy just written
    and fsynced is read back from the disk rather than from memory (best effort).
    """
    with open(path, "rb") as handle:
        if uncached and hasattr(os, "posix_fadvise"):
            with contextlib.suppress(OSError):
                os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _size(path: Path) -> int | None:
    """Return the size of a regular file, or None if it is missing or not a file."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def _plan_one(row: RawFile, target: Path, report: ArchiveReport) -> None:
    """Add to the dry run's ``report`` the move of ``row``'s file (reading no file)."""
    source = Path(row.path)
    size = _size(source)
    if size is None:
        report.problems.append((source, "the registered file is missing"))
        return
    report.archived.append(ArchivedFile(row.group_id, row.subband_idx, source, target, size, None))


def _archive_one(
    registry: Registry,
    row: RawFile,
    target: Path,
    horizon: str,
    report: ArchiveReport,
    hook: StepHook,
) -> None:
    """Move one registered file to ``target`` in the crash-safe order of the module docstring.

    Problems (missing, another size, a differing copy, a row changed meanwhile) are added to
    ``report`` and leave the original where it is.
    """
    source = Path(row.path)
    size = _size(source)
    if size is None:
        report.problems.append((source, "the registered file is missing or not a regular file"))
        return
    if row.size_bytes is not None and size != row.size_bytes:
        report.problems.append(
            (source, f"{size} bytes, but {row.size_bytes} were registered: not the same file")
        )
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep_temporaries(target)
    digest = sha256_of(source)
    placed = False
    if not os.path.lexists(target):
        try:
            if not _place_copy(source, target, digest, report, hook):
                return
            placed = True
        except FileExistsError:
            pass  # another run placed it meanwhile: verified below like any existing copy
    if not placed and same_file(source, target):
        report.problems.append((source, f"{target} is the original itself; left in place"))
        return
    # An earlier (or concurrent) run placed the copy: trust it only if it is the same bytes.
    if not placed and (_size(target) != size or sha256_of(target) != digest):
        report.problems.append(
            (source, f"{target} exists and differs from it; both left for inspection")
        )
        return
    if not move_file_row(registry, row, str(target), horizon):
        report.problems.append(
            (source, "its registry row or its group's state changed meanwhile; left in place")
        )
        return
    hook("registered", target)
    _remove_original(source)
    hook("removed", source)
    report.archived.append(
        ArchivedFile(row.group_id, row.subband_idx, source, target, size, digest)
    )


def _place_copy(
    source: Path, target: Path, digest: str, report: ArchiveReport, hook: StepHook
) -> bool:
    """Copy ``source`` beside ``target``, verify it, rename it into place; False on mismatch."""
    tmp = target.with_name(f".{target.name}.{_TEMP_KIND}-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        copy_file_sparse(source, tmp, durable=True)
        times = os.stat(source)
        os.utime(tmp, ns=(times.st_atime_ns, times.st_mtime_ns))  # the correlator's write time
        hook("copied", tmp)
        copied = sha256_of(tmp, uncached=True)
        if copied != digest:
            report.problems.append(
                (source, f"the archive copy's SHA-256 {copied} differs from {digest}; kept")
            )
            return False
        rename_no_replace(tmp, target)
    finally:
        remove_path(tmp)
    fsync_dir(target.parent)
    hook("placed", target)
    return True


def _remove_original(source: Path) -> None:
    """Remove the original (its copy is verified and registered) and make that durable."""
    source.unlink(missing_ok=True)
    fsync_dir(source.parent)


def _sweep_temporaries(target: Path) -> None:
    """Remove the temporary copies of ``target`` left by archive runs that died."""
    sweep_dead(target.parent, f".{target.name}.{_TEMP_KIND}-", _temp_owner)


def _temp_owner(rest: str) -> tuple[int, str] | None:
    """Return ``(pid, token)`` of a ``{pid}-{hex}`` temporary name, None for other names."""
    pid = rest.split("-", 1)[0]
    return (int(pid), rest) if pid.isdigit() else None


def _finish_interrupted(
    settings: Settings,
    registry: Registry,
    horizon: str,
    prefix: str,
    report: ArchiveReport,
    hook: StepHook,
) -> None:
    """Remove originals whose archived copy the registry already names, once verified.

    A run stopped between moving the row and removing the original leaves it in the input
    folder under its canonical name; each such file is compared with its archive copy and
    removed only if the bytes are the same.
    """
    slots: dict[tuple[str, int], Path] = {}
    try:
        entries = list(os.scandir(settings.input_dir))
    except OSError:
        return
    for entry in entries:
        try:
            parsed = parse_subband_filename(entry.name)
        except ValueError:
            continue
        if parsed.timestamp < horizon:
            slots[(parsed.timestamp, parsed.subband)] = Path(entry.path)
    for row in archived_rows(registry, slots, horizon, prefix):
        original, archived = slots[(row.group_id, row.subband_idx)], Path(row.path)
        if original.name != archived.name or same_file(original, archived):
            continue
        if _size(original) is None or _size(archived) != _size(original):
            report.problems.append(
                (original, f"registered as archived at {archived}, which differs; left in place")
            )
            continue
        if report.dry_run:
            report.finished.append(original)
            continue
        if sha256_of(archived) != sha256_of(original):
            report.problems.append(
                (original, f"registered as archived at {archived}, which differs; left in place")
            )
            continue
        _remove_original(original)
        hook("removed", original)
        report.finished.append(original)
