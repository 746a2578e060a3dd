"""The registry rows of one normalization pass, collected per file and written in one batch.

Writing row by row would cost a round trip per file; a pass instead collects every file's
rows here and :meth:`IngestBatch.write` sends each kind as one statement
(:mod:`dsa110_assets.registry.subbands`), inside the pass's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dsa110_assets.ingest.decision import SlotBook
from dsa110_assets.ingest.outcomes import PLACED, REJECTED, Action, FileOutcome, IngestReport
from dsa110_assets.ingest.scan import Candidate
from dsa110_assets.naming import subband_filename
from dsa110_assets.registry import Registry
from dsa110_assets.registry import subbands as sql


@dataclass
class IngestBatch:
    """Rows for the registry, gathered while a pass decides file after file.

    ``new_groups`` maps a group created in this pass to ``(received_at, obs_start)``;
    ``files`` holds ``(group_id, subband_idx, path, original_name, size_bytes,
    registered_at)`` and ``arrival_paths`` each registered file's path before its rename.
    """

    folder: str
    now: float
    new_groups: dict[str, tuple[float, float]] = field(default_factory=dict)
    files: list[tuple[Any, ...]] = field(default_factory=list)
    arrival_paths: list[str] = field(default_factory=list)
    conflicts: list[tuple[Any, ...]] = field(default_factory=list)
    rejects: list[tuple[Any, ...]] = field(default_factory=list)

    def add_group(self, group_id: str, received_at: float, obs_start: float) -> None:
        """Note a group created in this pass (written only if a file was placed in it)."""
        self.new_groups[group_id] = (received_at, obs_start)

    def record(
        self,
        outcome: FileOutcome,
        candidate: Candidate,
        holder: str | None,
        book: SlotBook,
        report: IngestReport,
    ) -> None:
        """Collect the rows of one file's outcome, and give a placed file its slot.

        A conflict's ``new_name`` becomes the slot's canonical name; ``holder`` is the path
        of the file holding it (when a rename found the name taken, that name).
        """
        src_path = f"{self.folder}/{candidate.name}"
        gid, sb = outcome.group_id, candidate.subband
        if outcome.action in REJECTED:
            self.rejects.append((src_path, sb, outcome.action.value, outcome.reason, self.now))
        elif outcome.action == Action.CONFLICT:
            assert gid is not None
            holder = holder or outcome.new_name or ""
            outcome.new_name = subband_filename(gid, sb)
            self.conflicts.append((src_path, gid, sb, holder, outcome.reason, self.now))
        elif outcome.action in PLACED:
            assert gid is not None and outcome.new_name is not None
            dst_path = f"{self.folder}/{outcome.new_name}"
            book.claimed[(gid, sb)] = dst_path
            report.groups.add(gid)
            if (gid, sb) not in book.registered:
                self.files.append((gid, sb, dst_path, candidate.name, candidate.size, self.now))
                self.arrival_paths.append(src_path)

    def created_in(self, groups: set[str]) -> list[str]:
        """Return the groups created in this pass that received a file, sorted."""
        return sorted(g for g in self.new_groups if g in groups)

    def write(self, registry: Registry, report: IngestReport, expected_subbands: int) -> None:
        """Write the pass's rows; new groups wait for ``expected_subbands`` files."""
        groups = report.groups
        sql.insert_collecting_groups(
            registry,
            [
                (gid, received, self.now, expected_subbands, start)
                for gid, (received, start) in self.new_groups.items()
                if gid in groups
            ],
        )
        sql.insert_subband_files(registry, self.files)
        report.files_registered = len(self.files)
        sql.clear_rejects(
            registry,
            [(row[2], src) for row, src in zip(self.files, self.arrival_paths, strict=True)],
        )
        sql.touch_groups(registry, self.now, sorted(groups - set(self.new_groups)))
        sql.record_conflicts(registry, self.conflicts)
        sql.record_rejects(registry, self.rejects)
