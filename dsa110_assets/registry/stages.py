"""Outcome of each stage after conversion (calibrate, apply, image, ...) per group.

``processing_queue`` tracks ingest and conversion; the later stages of a group keep their own
row in ``stage_status`` so the registry says what happened to every product, including why a
stage is waiting, was skipped or failed, without overloading the queue's state machine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum

from dsa110_assets.registry.connection import Registry


class StageOutcome(StrEnum):
    """What happened to a stage of a group, as ``stage_status.status`` stores it."""

    RUNNING = "running"
    DONE = "done"
    WAITING = "waiting"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True)
class StageStatus:
    """A ``stage_status`` row: a stage's outcome, what it said, and its error type."""

    group_id: str
    stage: str
    status: StageOutcome
    detail: str | None
    error: str | None
    updated_at: float


def write_stage(
    registry: Registry,
    group_id: str,
    stage: str,
    status: StageOutcome | str,
    detail: str | None = None,
    error: str | None = None,
) -> None:
    """Upsert the ``stage_status`` row inside the caller's write transaction.

    The one statement that writes a stage's outcome; the queue calls it inside the
    transaction that also moves the group's state.
    """
    registry.execute(
        "INSERT INTO stage_status(group_id, stage, status, detail, error, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(group_id, stage) DO UPDATE SET"
        " status = excluded.status, detail = excluded.detail, error = excluded.error,"
        " updated_at = excluded.updated_at",
        (group_id, stage, StageOutcome(status).value, detail, error, time.time()),
    )


def record_stage(
    registry: Registry,
    group_id: str,
    stage: str,
    status: StageOutcome,
    detail: str | None = None,
    *,
    error: str | None = None,
) -> None:
    """Upsert the outcome of ``stage`` for ``group_id`` (one row per group and stage)."""
    with registry.transaction():
        write_stage(registry, group_id, stage, status, detail, error)


def get_stage(registry: Registry, group_id: str, stage: str) -> StageStatus | None:
    """Return the ``stage_status`` row of ``group_id``'s ``stage``, or None if it never ran."""
    row = registry.execute(
        "SELECT group_id, stage, status, detail, error, updated_at FROM stage_status"
        " WHERE group_id = ? AND stage = ?",
        (group_id, stage),
    ).fetchone()
    if row is None:
        return None
    return StageStatus(row[0], row[1], StageOutcome(row[2]), row[3], row[4], row[5])
