"""One normalization pass: scan the folder, decide file after file, then write in batch.

The order of work in a pass:

1. :func:`~dsa110_assets.ingest.scan.scan` lists and classifies the entries;
2. the registry is asked once for the groups and slots near those files, so groups from
   earlier passes keep their ids and slots already filled are respected;
3. each candidate, in arrival order, is decided (:mod:`dsa110_assets.ingest.decision`) with
   the reads each step needs in between, renamed if so decided
   (:mod:`dsa110_assets.ingest.placement`), and its rows collected
   (:mod:`dsa110_assets.ingest.batch`);
4. the rows are written, and complete groups promoted to ``pending``.

With a registry, steps 1-3 and the writes run inside one transaction (``BEGIN IMMEDIATE``
unless a dry run): two normalizers on the same folder serialize, each sees the other's result.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from dsa110_assets.ingest import decision as rules
from dsa110_assets.ingest.batch import IngestBatch
from dsa110_assets.ingest.clustering import GroupIndex
from dsa110_assets.ingest.content import (
    NAME_TIME_TOLERANCE_S,
    ContentTime,
    UnreadableSubband,
    read_content_time,
)
from dsa110_assets.ingest.outcomes import Action, FileOutcome, IngestReport
from dsa110_assets.ingest.placement import ContentReader, carry_out_rename, look_on_disk
from dsa110_assets.ingest.scan import Candidate, describe, scan
from dsa110_assets.naming import (
    clamp_epoch,
    epoch_to_group_id,
    group_id_to_epoch,
    subband_filename,
)
from dsa110_assets.registry import Registry, promote_complete_groups
from dsa110_assets.registry import subbands as sql
from dsa110_assets.timing import Stopwatch

DEFAULT_TOLERANCE_S = 60.0


class PassKeywords(TypedDict, total=False):
    """The keywords an entry point passes on to :func:`ingest_directory` unchanged."""

    cluster_tolerance_s: float
    settle_s: float
    now: float | None
    expected_subbands: int
    content_reader: ContentReader | None


@dataclass(frozen=True)
class PassOptions:
    """How a pass treats the files (see :func:`ingest_directory` for each)."""

    cluster_tolerance_s: float = DEFAULT_TOLERANCE_S
    dry_run: bool = False
    settle_s: float = 0.0
    now: float | None = None
    expected_subbands: int = 16
    content_reader: ContentReader | None = None

    def check(self) -> None:
        """Refuse tolerances that would silently disable a rule (NaN, negative, infinite).

        Raises
        ------
        ValueError
            The tolerance or settle time is not a finite number >= 0.
        """
        tolerance_s, settle_s = self.cluster_tolerance_s, self.settle_s
        if not (isinstance(tolerance_s, int | float) and math.isfinite(tolerance_s)):
            raise ValueError(f"cluster tolerance {tolerance_s!r} s must be a finite number")
        if tolerance_s < 0:
            raise ValueError(f"cluster tolerance {tolerance_s!r} s must be >= 0")
        if not (isinstance(settle_s, int | float) and math.isfinite(settle_s) and settle_s >= 0):
            raise ValueError(f"settle time {settle_s!r} s must be a finite number >= 0")


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
    """Run the normalization pass behind the public functions.

    ``names`` restricts the pass to those entries of ``directory`` (a sensor's new files);
    otherwise the whole folder is scanned. The other parameters are those of
    :func:`~dsa110_assets.ingest.normalize_directory`.

    Raises
    ------
    ValueError
        The tolerance or settle time is not a finite number >= 0 (checked before anything is
        read, since a NaN would silently turn a rule off).
    NotADirectoryError
        ``directory`` is not a folder.
    """
    options = PassOptions(
        cluster_tolerance_s, dry_run, settle_s, now, expected_subbands, content_reader
    )
    options.check()
    watch = Stopwatch()
    directory = Path(directory).resolve()
    if not directory.is_dir():
        raise NotADirectoryError(f"input folder {directory} does not exist or is not a folder")
    report = IngestReport(directory=directory, dry_run=dry_run)
    if registry is None:
        _run_pass(report, names, None, options)
    else:
        trips_before = registry.round_trips
        # A dry run only reads, so a deferred transaction suffices and takes no write lock.
        with registry.transaction(write=not dry_run):
            _run_pass(report, names, registry, options)
        if not dry_run and report.groups:
            report.groups_completed = promote_complete_groups(registry, sorted(report.groups))
        report.db_round_trips = registry.round_trips - trips_before
    report.elapsed_s = watch.elapsed_s
    return report


def _run_pass(
    report: IngestReport, names: Iterable[str] | None, registry: Registry | None, opts: PassOptions
) -> None:
    """Scan, decide and place every file, then write the pass's rows (unless a dry run)."""
    now = time.time() if opts.now is None else opts.now
    candidates, stopped, on_disk = scan(report.directory, names, opts.settle_s, now)
    report.outcomes.extend(stopped)
    if not candidates:
        return
    read = read_content_time if opts.content_reader is None else opts.content_reader
    placer = _Placer(str(report.directory), registry, opts, read, now, on_disk)
    placer.load(candidates)
    for candidate in candidates:
        outcome, holder = placer.place(candidate)
        report.outcomes.append(outcome)
        placer.batch.record(outcome, candidate, holder, placer.book, report)
    report.groups_created = placer.batch.created_in(report.groups)
    if registry is not None and not opts.dry_run:
        placer.batch.write(registry, report, opts.expected_subbands)


class _Placer:
    """The state of one pass while it places file after file: groups, slots, rows."""

    def __init__(
        self,
        folder: str,
        registry: Registry | None,
        opts: PassOptions,
        read: ContentReader,
        now: float,
        on_disk: set[str] | None,
    ) -> None:
        self.folder, self.registry, self.opts, self.read = folder, registry, opts, read
        self.now, self.on_disk = now, on_disk
        self.book = rules.SlotBook()
        self.index = GroupIndex()
        self.batch = IngestBatch(folder, now)

    def load(self, candidates: list[Candidate]) -> None:
        """Read the registry's groups and slots near ``candidates`` (one query each).

        A group's id is within the name tolerance of its observation start, and so is each
        file's name: the window covers every group a file could join.
        """
        if self.registry is None:
            return
        reach = 2 * NAME_TIME_TOLERANCE_S + self.opts.cluster_tolerance_s + 1
        lo = epoch_to_group_id(clamp_epoch(min(c.epoch for c in candidates) - reach))
        hi = epoch_to_group_id(clamp_epoch(max(c.epoch for c in candidates) + reach))
        known = sql.group_starts_between(self.registry, lo, hi)
        for gid, sb, path, original in sql.files_between(self.registry, lo, hi):
            self.book.add_registered((gid, sb), path, original)
        self.index = GroupIndex(self._group_starts(known))

    def _group_starts(self, groups: dict[str, float | None]) -> list[tuple[float, str]]:
        """Return observation starts of registry groups; older rows (NULL) read a file.

        A group whose files cannot be read any more keeps its group_id's time as its start
        (the name of its first file, honest to within the name tolerance).
        """
        assert self.registry is not None
        result: list[tuple[float, str]] = []
        for gid, start in groups.items():
            if start is None:
                for _, path in sql.group_files(self.registry, gid):
                    try:
                        start = self.read(path).start_s
                        break
                    except UnreadableSubband:
                        continue
            result.append((float(group_id_to_epoch(gid)) if start is None else start, gid))
        return result

    def _exists(self, name: str) -> bool:
        """Return whether ``name`` is in the folder (from the listing, when there is one)."""
        if self.on_disk is not None:
            return name in self.on_disk
        return os.path.lexists(f"{self.folder}/{name}")

    def place(self, c: Candidate) -> tuple[FileOutcome, str | None]:
        """Decide one file and carry out its rename; return its outcome and slot holder.

        Whatever goes wrong with the file (a failed rename, say) is its own ``error``.
        """
        src_path = f"{self.folder}/{c.name}"
        try:
            decision, created = self._decide(c, src_path)
            gid = decision.group_id
            if created and gid is not None:
                self.batch.add_group(gid, c.mtime, self.index.start_of(gid))
            outcome = decision.outcome(c)
            if outcome.action is Action.RENAMED and not self.opts.dry_run:
                carry_out_rename(outcome, src_path, self.folder, self.on_disk)
        except Exception as exc:  # one file's problem stays that file's
            return FileOutcome(c.name, Action.ERROR, subband=c.subband, reason=describe(exc)), None
        return outcome, decision.holder

    def _decide(self, c: Candidate, src_path: str) -> tuple[rules.Decision, bool]:
        """Take the decision's three steps, reading what each needs (see ``decision``).

        Returns the decision and whether a new group was created for the file.
        """
        known = rules.decide_known(c, src_path, self.book)
        if known is not None:
            return known, False  # normalized and registered before: not read again
        content: ContentTime | UnreadableSubband
        try:
            content = self.read(src_path)
        except UnreadableSubband as exc:
            content = exc
        refused = rules.decide_content(c, content, self.now)
        if refused is not None:
            return refused, False
        assert isinstance(content, ContentTime)
        gid, created = self.index.assign(
            content.start_s, self.opts.cluster_tolerance_s, epoch_to_group_id(c.epoch)
        )
        target = subband_filename(gid, c.subband)
        state, holder = self.book.state_of((gid, c.subband), f"{self.folder}/{target}", c.name)
        if state is rules.SlotState.FREE:
            state, holder = look_on_disk(c.name, target, self.folder, self._exists, self.read)
        with_registry = self.registry is not None
        return rules.decide_slot(
            c, gid, target, state, holder, with_registry=with_registry
        ), created
