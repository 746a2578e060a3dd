"""The ingest queue's state machine.

::

    collecting -> pending -> in_progress -> completed
         |           |            |
         +-----------+------------+--> failed --(retry, at most 3)--> pending / in_progress

Every change goes through :func:`transition`, a compare-and-set inside a write transaction, so
two workers can never both move a group out of the same state; an illegal move raises.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from enum import StrEnum

from dsa110_assets.registry.connection import Registry

MAX_RETRIES = 3


class QueueState(StrEnum):
    COLLECTING = "collecting"
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"


ALLOWED_TRANSITIONS: dict[QueueState, frozenset[QueueState]] = {
    QueueState.COLLECTING: frozenset({QueueState.PENDING, QueueState.FAILED}),
    QueueState.PENDING: frozenset({QueueState.IN_PROGRESS, QueueState.FAILED}),
    QueueState.IN_PROGRESS: frozenset({QueueState.COMPLETED, QueueState.FAILED}),
    QueueState.FAILED: frozenset({QueueState.PENDING, QueueState.IN_PROGRESS}),
    QueueState.COMPLETED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A state change the queue does not allow (or that lost a race)."""


class RetriesExhausted(IllegalTransition):
    """A failed group has already been retried ``MAX_RETRIES`` times."""


class UnknownGroup(KeyError):
    """No ``processing_queue`` row for this group_id."""


@dataclass(frozen=True)
class GroupStatus:
    group_id: str
    state: QueueState
    retry_count: int
    error: str | None
    error_message: str | None
    processing_stage: str | None
    last_update: float


def check_transition(current: QueueState, new: QueueState, retry_count: int) -> None:
    """Raise unless ``current -> new`` is allowed with ``retry_count`` retries used."""
    if new not in ALLOWED_TRANSITIONS[current]:
        raise IllegalTransition(f"illegal queue transition {current.value} -> {new.value}")
    if current is QueueState.FAILED and retry_count >= MAX_RETRIES:
        raise RetriesExhausted(
            f"retries exhausted ({retry_count}/{MAX_RETRIES}); the group stays failed"
        )


def get_status(registry: Registry, group_id: str) -> GroupStatus:
    row = registry.execute(
        "SELECT group_id, state, retry_count, error, error_message, processing_stage,"
        " last_update FROM processing_queue WHERE group_id = ?",
        (group_id,),
    ).fetchone()
    if row is None:
        raise UnknownGroup(group_id)
    return GroupStatus(
        row["group_id"],
        QueueState(row["state"]),
        int(row["retry_count"] or 0),
        row["error"],
        row["error_message"],
        row["processing_stage"],
        float(row["last_update"]),
    )


def transition(
    registry: Registry,
    group_id: str,
    new_state: QueueState | str,
    *,
    error: str | None = None,
    error_message: str | None = None,
    stage: str | None = None,
    now: float | None = None,
) -> GroupStatus:
    """Move a group to ``new_state``.

    Leaving ``failed`` counts a retry. Entering ``failed`` requires ``error`` and
    ``error_message``; reaching ``completed`` clears them.

    Raises
    ------
    UnknownGroup, IllegalTransition, RetriesExhausted
    """
    new = QueueState(new_state)
    if new is QueueState.FAILED and not (error and error_message):
        raise ValueError("a transition to 'failed' needs error and error_message")
    now = time.time() if now is None else now
    with registry.transaction():
        status = get_status(registry, group_id)
        check_transition(status.state, new, status.retry_count)
        retries = status.retry_count + (1 if status.state is QueueState.FAILED else 0)
        if new is QueueState.FAILED:
            err, msg = error, error_message
        elif new is QueueState.COMPLETED:
            err, msg = None, None
        else:
            err, msg = status.error, status.error_message
        cursor = registry.execute(
            "UPDATE processing_queue SET state = ?, retry_count = ?, error = ?,"
            " error_message = ?, processing_stage = COALESCE(?, processing_stage),"
            " last_update = ? WHERE group_id = ? AND state = ?",
            (new.value, retries, err, msg, stage, now, group_id, status.state.value),
        )
        if cursor.rowcount != 1:  # pragma: no cover - guarded by the write lock
            raise IllegalTransition(f"{group_id}: state changed concurrently")
    return get_status(registry, group_id)


def count_by_state(registry: Registry) -> dict[str, int]:
    """The storage document's 'count by state' query, as a dict with every state present."""
    counts = {state.value: 0 for state in QueueState}
    for row in registry.query("SELECT state, COUNT(*) FROM processing_queue GROUP BY state;"):
        counts[row[0]] = row[1]
    return counts


def promote_complete_groups(
    registry: Registry, group_ids: list[str] | None = None, *, now: float | None = None
) -> list[str]:
    """Move ``collecting`` groups holding all their expected subbands to ``pending``.

    Checks only ``group_ids`` when given (a sensor tick's touched groups), so the cost follows
    the new files, not the history. Returns the promoted group_ids, oldest first.
    """
    now = time.time() if now is None else now
    with registry.transaction():
        params: list[object] = []
        where = ""
        if group_ids is not None:
            if not group_ids:
                return []
            registry.execute("CREATE TEMP TABLE IF NOT EXISTS _touched (group_id TEXT)")
            registry.execute("DELETE FROM _touched")
            registry.conn.executemany("INSERT INTO _touched VALUES (?)", [(g,) for g in group_ids])
            where = " AND q.group_id IN (SELECT group_id FROM _touched)"
        ready = [
            row[0]
            for row in registry.query(
                "SELECT q.group_id FROM processing_queue q"
                " JOIN subband_files sf ON sf.group_id = q.group_id"
                " WHERE q.state = 'collecting'" + where + " GROUP BY q.group_id"
                " HAVING COUNT(sf.subband_idx) >= COALESCE(q.expected_subbands, 16)"
                " ORDER BY q.group_id",
                params,
            )
        ]
        registry.conn.executemany(
            "UPDATE processing_queue SET state = 'pending', last_update = ?"
            " WHERE group_id = ? AND state = 'collecting'",
            [(now, g) for g in ready],
        )
    return ready


@dataclass(frozen=True)
class StaleGroups:
    """Groups that stopped waiting for subbands (see :func:`expire_stale_groups`)."""

    partial: dict[str, list[int]]  # promoted to pending: group_id -> missing subbands
    failed: dict[str, str]  # marked failed: group_id -> message
    missing: dict[str, list[int]]  # every expired group: group_id -> missing subbands


def expire_stale_groups(
    registry: Registry,
    *,
    wait_s: float,
    min_subbands: int,
    now: float | None = None,
    n_subbands: int = 16,
) -> StaleGroups:
    """Stop waiting for groups still ``collecting`` ``wait_s`` after their last file.

    A group with at least ``min_subbands`` goes on as ``pending`` with its missing subbands
    recorded in ``missing_subbands``; one with fewer is ``failed`` with a clear message. Only
    collecting groups older than the cut-off are read (index on state, last_update).
    """
    now = time.time() if now is None else now
    partial: dict[str, list[int]] = {}
    failed: dict[str, str] = {}
    missing_by_group: dict[str, list[int]] = {}
    with registry.transaction():
        rows = registry.query(
            "SELECT q.group_id, group_concat(sf.subband_idx) AS present"
            " FROM processing_queue q LEFT JOIN subband_files sf ON sf.group_id = q.group_id"
            " WHERE q.state = 'collecting' AND q.last_update <= ? GROUP BY q.group_id",
            (now - wait_s,),
        )
        for row in rows:
            present = {int(x) for x in (row["present"] or "").split(",") if x}
            missing = sorted(set(range(n_subbands)) - present)
            missing_by_group[row["group_id"]] = missing
            if len(present) >= min_subbands:
                partial[row["group_id"]] = missing
            else:
                failed[row["group_id"]] = (
                    f"only {len(present)} of {n_subbands} subbands arrived within "
                    f"{wait_s:g} s of the last file (at least {min_subbands} needed); "
                    f"missing {missing}"
                )
        registry.conn.executemany(
            "UPDATE processing_queue SET state = 'pending', missing_subbands = ?,"
            " last_update = ? WHERE group_id = ? AND state = 'collecting'",
            [(json.dumps(m), now, g) for g, m in partial.items()],
        )
        registry.conn.executemany(
            "UPDATE processing_queue SET state = 'failed', error = 'IncompleteGroup',"
            " error_message = ?, missing_subbands = ?, last_update = ?"
            " WHERE group_id = ? AND state = 'collecting'",
            [(msg, json.dumps(missing_by_group[g]), now, g) for g, msg in failed.items()],
        )
    return StaleGroups(partial, failed, missing_by_group)
