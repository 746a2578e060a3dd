"""The registry's ``flag_summary`` and ``ms_index.flagged_fraction``: what flagging did.

One row per group and flagging step (a re-run replaces its rows), so the UI, the CLI and
the analytics all read the same fractions the flagging asset reported.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from dsa110_assets.registry.connection import Registry
from dsa110_assets.registry.upsert import upsert


@dataclass(frozen=True)
class FlagStepRow:
    """One flagging step of one group, as ``flag_summary`` keeps it."""

    group_id: str
    step: str
    version_before: str | None
    fraction_before: float
    fraction_after: float
    per_spw: dict[str, float]
    per_antenna: dict[str, float]
    per_integration: list[float]
    detail: dict[str, object]
    duration_s: float


def record_flag_steps(
    registry: Registry, ms_path: Path, steps: list[FlagStepRow], flagged_fraction: float
) -> None:
    """Upsert the steps' rows and the MS's final flagged fraction in one transaction."""
    now = time.time()
    rows = [
        {
            "group_id": s.group_id,
            "step": s.step,
            "version_before": s.version_before,
            "fraction_before": s.fraction_before,
            "fraction_after": s.fraction_after,
            "per_spw": json.dumps(s.per_spw),
            "per_antenna": json.dumps(s.per_antenna),
            "per_integration": json.dumps(s.per_integration),
            "detail": json.dumps(s.detail, sort_keys=True),
            "duration_s": s.duration_s,
            "created_at": now,
        }
        for s in steps
    ]
    with registry.transaction():
        upsert(registry, "flag_summary", rows, conflict=("group_id", "step"))
        registry.execute(
            "UPDATE ms_index SET flagged_fraction = ? WHERE path = ?",
            (flagged_fraction, str(ms_path)),
        )


def flag_steps(registry: Registry, group_id: str) -> list[sqlite3.Row]:
    """Return the group's ``flag_summary`` rows in the order the steps ran."""
    return registry.query(
        "SELECT * FROM flag_summary WHERE group_id = ? ORDER BY created_at, rowid", (group_id,)
    )
