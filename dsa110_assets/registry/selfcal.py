"""The registry's ``selfcal_rounds``: every self-calibration round of a group, kept or not.

A re-run of the group's imaging replaces its rounds, so the table always describes the image
registered now.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from dsa110_assets.registry.connection import Registry


def record_selfcal_rounds(registry: Registry, group_id: str, rounds: Sequence[Any]) -> None:
    """Replace the group's rounds with ``rounds`` (``SelfcalRound``-like objects)."""
    now = time.time()
    with registry.transaction():
        registry.execute("DELETE FROM selfcal_rounds WHERE group_id = ?", (group_id,))
        for r in rounds:
            registry.execute(
                "INSERT INTO selfcal_rounds (group_id, round, mode, solint_s, noise_before_jy,"
                " noise_after_jy, dynamic_range_before, dynamic_range_after, accepted, reason,"
                " solutions, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    group_id,
                    r.round,
                    r.mode,
                    float(r.solint_s),  # inf: one solution for the whole group
                    r.noise_before_jy,
                    r.noise_after_jy,
                    _finite(r.dynamic_range_before),
                    _finite(r.dynamic_range_after),
                    int(r.accepted),
                    r.reason,
                    json.dumps(r.solutions, sort_keys=True),
                    now,
                ),
            )


def _finite(value: float | None) -> float | None:
    """Return ``value``, or None when it is missing or not finite (a noiseless image's DR)."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def selfcal_rounds(registry: Registry, group_id: str) -> list[sqlite3.Row]:
    """Return the group's rounds in order."""
    return registry.query(
        "SELECT * FROM selfcal_rounds WHERE group_id = ? ORDER BY round", (group_id,)
    )
