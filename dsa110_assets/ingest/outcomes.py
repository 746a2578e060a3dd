"""What a normalization pass did to each file, and the counts it reports."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any


class Action(StrEnum):
    """What happened to one file; a ``str``, so reports and the CLI print the plain name.

    Members are listed in the order reports list them.
    """

    RENAMED = "renamed"
    UNCHANGED = "unchanged"
    REGISTERED = "registered"
    CONFLICT = "conflict"
    UNMATCHED = "unmatched"
    INCOMPLETE = "incomplete"
    STILL_WRITING = "still_writing"
    REFUSED = "refused"
    UNREADABLE = "unreadable"
    MISMATCH = "mismatch"
    ERROR = "error"
    VANISHED = "vanished"


#: Actions that leave a file where it is, unregistered (counted as ``skipped``).
SKIPPED = (
    Action.UNMATCHED,
    Action.INCOMPLETE,
    Action.STILL_WRITING,
    Action.REFUSED,
    Action.UNREADABLE,
    Action.MISMATCH,
    Action.ERROR,
)
#: Actions a file can receive, in the order reports list them.
ACTIONS = tuple(Action)
#: Actions that give a file its (group, subband) slot.
PLACED = (Action.RENAMED, Action.UNCHANGED, Action.REGISTERED)
#: Skipped actions recorded in ``ingest_rejects``: the file is there but cannot be taken.
REJECTED = (Action.UNREADABLE, Action.MISMATCH, Action.ERROR)


@dataclass(slots=True)
class FileOutcome:
    """What happened to one file.

    ``new_name`` is the canonical name of a placed file, or of the slot a conflicting file
    wanted; ``retry`` is True for a file to look at again next tick even if it does not change.
    """

    name: str
    action: Action
    group_id: str | None = None
    subband: int | None = None
    new_name: str | None = None
    reason: str | None = None
    retry: bool | None = None


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
        """Return how many files received ``action``."""
        return sum(1 for o in self.outcomes if o.action == action)

    def stats(self, *, details: bool = False) -> dict[str, Any]:
        """Return the pass's counts (and, with ``details``, one dict per file).

        The keys are the documented result of :func:`~dsa110_assets.ingest.normalize_directory`
        and of ``dsa110 normalize``; a per-file dict leaves out the fields that are None.
        """
        counts = dict.fromkeys(ACTIONS, 0)
        for outcome in self.outcomes:
            counts[outcome.action] += 1
        stats: dict[str, Any] = {
            "directory": str(self.directory),
            "dry_run": self.dry_run,
            "files_scanned": len(self.outcomes),
            "files_renamed": counts[Action.RENAMED],
            "files_unchanged": counts[Action.UNCHANGED] + counts[Action.REGISTERED],
            "files_registered": self.files_registered,
            "groups": len(self.groups),
            "groups_created": len(self.groups_created),
            "groups_completed": len(self.groups_completed),
            "skipped": sum(counts[a] for a in SKIPPED),
            "conflicts": counts[Action.CONFLICT],
            "unmatched": counts[Action.UNMATCHED],
            "incomplete": counts[Action.INCOMPLETE],
            "still_writing": counts[Action.STILL_WRITING],
            "refused": counts[Action.REFUSED],
            "unreadable": counts[Action.UNREADABLE],
            "mismatch": counts[Action.MISMATCH],
            "errors": counts[Action.ERROR],
            "vanished": counts[Action.VANISHED],
            "db_round_trips": self.db_round_trips,
            "elapsed_s": round(self.elapsed_s, 4),
        }
        if details:
            stats["files"] = [
                {k: v for k, v in asdict(o).items() if v is not None} for o in self.outcomes
            ]
        return stats
