"""What one observation's subband set looks like on disk, read from the registry."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsa110_assets.naming import N_SUBBANDS
from dsa110_assets.registry import Registry, UnknownGroup
from dsa110_assets.registry.subbands import group_files, queue_entry


@dataclass(frozen=True)
class SubbandGroup:
    """The normalized files of one group: the input of conversion.

    ``files`` maps subband index to path; ``missing`` lists expected subbands that never
    arrived (a partial group processed after its wait) or whose file has disappeared.
    """

    group_id: str
    files: dict[int, Path]
    sizes: dict[int, int]
    missing: list[int]
    state: str
    expected_subbands: int = N_SUBBANDS
    calibrators: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        """Bytes of the files present (the conversion's input size)."""
        return sum(self.sizes.values())

    @property
    def is_complete(self) -> bool:
        """Whether every expected subband is there."""
        return not self.missing

    def metadata(self) -> dict[str, Any]:
        """Plain values for Dagster materialization metadata."""
        return {
            "group_id": self.group_id,
            "subbands_present": len(self.files),
            "subbands_missing": ", ".join(f"sb{sb:02d}" for sb in self.missing) or "none",
            "total_bytes": self.total_bytes,
            "queue_state": self.state,
            "files": "\n".join(str(self.files[sb]) for sb in sorted(self.files)),
        }


def describe_group(registry: Registry, group_id: str) -> SubbandGroup:
    """Read a group's registered files and check each is still there.

    Raises
    ------
    UnknownGroup
        The group_id is not in ``processing_queue``.
    """
    row = queue_entry(registry, group_id)
    if row is None:
        raise UnknownGroup(group_id)
    files: dict[int, Path] = {}
    sizes: dict[int, int] = {}
    for sb, path in group_files(registry, group_id):
        try:
            sizes[sb] = os.stat(path).st_size
        except FileNotFoundError:
            continue
        files[sb] = Path(path)
    missing = [sb for sb in range(N_SUBBANDS) if sb not in files]
    return SubbandGroup(
        group_id=group_id,
        files=files,
        sizes=sizes,
        missing=missing,
        state=row["state"],
        expected_subbands=row["expected_subbands"] or N_SUBBANDS,
        calibrators=json.loads(row["calibrators"]) if row["calibrators"] else [],
    )
