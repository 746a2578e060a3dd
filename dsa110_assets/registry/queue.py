"""The ingest queue's state machine.

::

    collecting -> pending -> in_progress -> completed
         |           |            |
         +-----------+------------+--> failed --(retry, at most 3)--> pending / in_progress

Every change goes through :func:`transition`, a compare-and-set inside a write transaction, so
two workers can never both move a group out of the same state; an illegal move raises.

Owners. A worker enters ``in_progress`` through :func:`claim`, which records in the same
transaction *who* holds the group (:class:`Owner`: host, boot id, pid and the pid's start time,
a per-attempt token, the Dagster run id) in the group's ``stage_status`` row of that stage
(``status = 'running'``, the owner as JSON in ``detail``; no schema change). Whether an owner is
dead is then decidable: on the same host, a rebooted machine, a pid that no longer runs, or a
pid reused by another process (its start time differs); on another host, a lease
(``foreign_lease_s``) since the attempt started. A group ``in_progress`` under a dead owner
(SIGKILL, OOM kill, ``abort()`` in C++ code, power loss) is taken over by the next
:func:`claim`: the dead attempt is recorded as ``failed`` (``AttemptDied``, counting as a retry,
so a group that kills its worker every time still ends ``failed``) and moved back to
``in_progress`` for the new owner, who cleans the dead attempt's staging first. A live owner's
group is refused (:class:`GroupBusy`). :func:`finish` leaves ``in_progress`` only for the owner
that holds it. :func:`requeue_dead_attempts` puts dead attempts back to ``pending`` for a
sensor that requests only pending groups.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path

from dsa110_assets.errors import PipelineError
from dsa110_assets.registry.connection import Registry
from dsa110_assets.registry.stages import write_stage

MAX_RETRIES = 3


class QueueState(StrEnum):
    """A group's state in ``processing_queue`` (the transitions are in the module docstring)."""

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


class IllegalTransition(PipelineError, RuntimeError):
    """A state change the queue does not allow (or that lost a race)."""


class RetriesExhausted(IllegalTransition):
    """A failed group has already been retried ``MAX_RETRIES`` times."""


class UnknownGroup(KeyError):
    """No ``processing_queue`` row for this group_id."""


class GroupBusy(IllegalTransition):
    """The group is ``in_progress`` under an owner that is still alive."""


class NotOwner(IllegalTransition):
    """The group is no longer held by this owner (it was taken over, or finished)."""


@dataclass(frozen=True)
class GroupStatus:
    """A group's ``processing_queue`` row: state, retries and the last error."""

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
    """Return the queue status of ``group_id``.

    Raises
    ------
    UnknownGroup
        The group is not in the queue.
    """
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
        return _move(
            registry, status, new, error=error, error_message=error_message, stage=stage, now=now
        )


#: Attempts started on another host are presumed dead this long after they started (a full
#: conversion takes minutes; the pid of another machine cannot be checked from here).
FOREIGN_LEASE_S = 6 * 3600.0
#: The error recorded for an attempt whose owner died without finishing.
ATTEMPT_DIED = "AttemptDied"

_ACTIVE_TOKENS: set[str] = set()  # attempts of this process that have not finished


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _pid_start_ticks(pid: int) -> int | None:
    """Return the start time of process ``pid`` (clock ticks after boot), None if it is not running.

    Field 22 of ``/proc/PID/stat``; read after the command name's closing parenthesis, since
    the name itself may contain spaces and parentheses.
    """
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


@dataclass(frozen=True)
class Owner:
    """Who runs an attempt, enough to decide later whether it is still alive."""

    host: str
    boot_id: str
    pid: int
    pid_start: int | None
    token: str  # unique per attempt: also the tag of its staging names
    started_at: float
    run_id: str | None = None

    @classmethod
    def current(cls, run_id: str | None = None, *, now: float | None = None) -> Owner:
        """Return an owner for a new attempt by this process."""
        pid = os.getpid()
        return cls(
            host=socket.gethostname(),
            boot_id=_boot_id(),
            pid=pid,
            pid_start=_pid_start_ticks(pid),
            token=f"{pid}-{secrets.token_hex(4)}",
            started_at=time.time() if now is None else now,
            run_id=run_id,
        )

    def to_json(self) -> str:
        """Return the owner as the JSON recorded in ``stage_status.detail``."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> Owner | None:
        """Return the owner recorded in ``text``, None when there is none (or it is unreadable)."""
        try:
            data = json.loads(text or "")
            return cls(**data)
        except (TypeError, ValueError):
            return None

    def is_alive(
        self, *, now: float | None = None, foreign_lease_s: float = FOREIGN_LEASE_S
    ) -> bool:
        """Whether the attempt may still be running (see the module docstring)."""
        now = time.time() if now is None else now
        if self.host != socket.gethostname():
            return now - self.started_at < foreign_lease_s
        if self.boot_id and self.boot_id != _boot_id():
            return False  # the machine rebooted since
        start = _pid_start_ticks(self.pid)
        if start is None or (self.pid_start is not None and start != self.pid_start):
            return False  # not running, or the pid now belongs to another process
        if self.pid == os.getpid():
            return self.token in _ACTIVE_TOKENS  # this process: an attempt not yet finished
        return True

    def describe(self) -> str:
        """Return the owner in words, for error messages and the operator."""
        run = f", run {self.run_id}" if self.run_id else ""
        started = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.started_at))
        return f"pid {self.pid} on {self.host} (attempt {self.token}{run}, started {started}Z)"


@dataclass(frozen=True)
class Claim:
    """The outcome of :func:`claim`: the status now, and the dead attempt taken over."""

    status: GroupStatus
    owner: Owner
    dead: Owner | None  # the owner of an attempt that died (its staging is to be cleaned)
    took_over: bool  # the group was in_progress under a dead (or unrecorded) owner


def get_owner(registry: Registry, group_id: str, stage: str) -> Owner | None:
    """Return the owner holding ``group_id``'s ``stage`` attempt (None if none is running)."""
    row = _stage_row(registry, group_id, stage)
    if row is None or row["status"] != "running":
        return None
    return Owner.from_json(row["detail"])


def _dead_owner(registry: Registry, group_id: str, stage: str) -> Owner | None:
    """Return the owner of the last attempt recorded as died (its staging is to be cleaned)."""
    row = _stage_row(registry, group_id, stage)
    if row is None or row["status"] != "failed" or row["error"] != ATTEMPT_DIED:
        return None
    return Owner.from_json(row["detail"])


def _stage_row(registry: Registry, group_id: str, stage: str):
    return registry.execute(
        "SELECT status, detail, error FROM stage_status WHERE group_id = ? AND stage = ?",
        (group_id, stage),
    ).fetchone()


def _record_death(
    registry: Registry, status: GroupStatus, previous: Owner | None, stage: str, now: float
) -> GroupStatus:
    """``in_progress -> failed`` for a dead attempt; its owner stays in ``stage_status``."""
    message = _died_message(previous)
    status = _move(
        registry,
        status,
        QueueState.FAILED,
        error=ATTEMPT_DIED,
        error_message=message,
        stage=stage,
        now=now,
    )
    detail = previous.to_json() if previous is not None else message
    write_stage(registry, status.group_id, stage, "failed", detail, ATTEMPT_DIED)
    return status


def _move(
    registry: Registry,
    status: GroupStatus,
    new: QueueState,
    *,
    error: str | None,
    error_message: str | None,
    stage: str | None,
    now: float,
) -> GroupStatus:
    """One checked compare-and-set; the caller holds the write transaction."""
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
        (new.value, retries, err, msg, stage, now, status.group_id, status.state.value),
    )
    if cursor.rowcount != 1:  # pragma: no cover - guarded by the write lock
        raise IllegalTransition(f"{status.group_id}: state changed concurrently")
    return get_status(registry, status.group_id)


def _died_message(dead: Owner | None) -> str:
    if dead is None:
        return "an earlier attempt left the group in_progress without recording its owner"
    return f"the attempt by {dead.describe()} died without finishing (killed or crashed)"


def claim(
    registry: Registry,
    group_id: str,
    owner: Owner,
    *,
    stage: str,
    now: float | None = None,
    foreign_lease_s: float = FOREIGN_LEASE_S,
) -> Claim:
    """Move a group to ``in_progress`` for ``owner``, taking it over from a dead owner.

    ``pending`` and ``failed`` (a retry) move as with :func:`transition`. ``in_progress`` under
    a dead owner, or under none recorded, is recorded as a failed attempt (``AttemptDied``,
    one retry used) and moved back to ``in_progress``, all in one transaction, so two workers
    cannot both take a group over. The owner is recorded in ``stage_status``.

    Raises
    ------
    UnknownGroup, IllegalTransition
    GroupBusy
        The group is ``in_progress`` under a live owner.
    RetriesExhausted
        The group has no retry left; a dead attempt is still recorded as ``failed``.
    """
    now = time.time() if now is None else now
    dead: Owner | None = None
    took_over = False
    exhausted: RetriesExhausted | None = None
    with registry.transaction():
        status = get_status(registry, group_id)
        if status.state is QueueState.IN_PROGRESS:
            previous = get_owner(registry, group_id, stage)
            if previous is not None and previous.is_alive(now=now, foreign_lease_s=foreign_lease_s):
                raise GroupBusy(f"{group_id} is being processed by {previous.describe()}")
            dead, took_over = previous, True
            status = _record_death(registry, status, previous, stage, now)
        else:
            dead = _dead_owner(registry, group_id, stage)  # requeued after it died
        try:
            status = _move(
                registry,
                status,
                QueueState.IN_PROGRESS,
                error=None,
                error_message=None,
                stage=stage,
                now=now,
            )
        except RetriesExhausted as exc:
            if not took_over:
                raise
            exhausted = exc  # commit the recorded death, then raise
        else:
            write_stage(registry, group_id, stage, "running", owner.to_json(), None)
            _ACTIVE_TOKENS.add(owner.token)
    if exhausted is not None:
        raise exhausted
    return Claim(status, owner, dead, took_over)


def finish(
    registry: Registry,
    group_id: str,
    owner: Owner,
    new_state: QueueState | str,
    *,
    stage: str,
    error: str | None = None,
    error_message: str | None = None,
    detail: str | None = None,
    now: float | None = None,
) -> GroupStatus:
    """End ``owner``'s attempt: ``in_progress -> completed`` or ``failed``.

    Refused (:class:`NotOwner`) when the group is no longer this owner's, so an attempt
    wrongly presumed dead and taken over cannot overwrite what its successor records.
    """
    new = QueueState(new_state)
    if new not in (QueueState.COMPLETED, QueueState.FAILED):
        raise ValueError(f"an attempt finishes as completed or failed, not {new.value}")
    if new is QueueState.FAILED and not (error and error_message):
        raise ValueError("a transition to 'failed' needs error and error_message")
    now = time.time() if now is None else now
    try:
        with registry.transaction():
            status = get_status(registry, group_id)
            holder = get_owner(registry, group_id, stage)
            if (
                status.state is not QueueState.IN_PROGRESS
                or holder is None
                or (holder.token != owner.token)
            ):
                raise NotOwner(
                    f"{group_id} is {status.state.value}"
                    + (f" under {holder.describe()}" if holder else "")
                    + f"; attempt {owner.token} no longer holds it"
                )
            status = _move(
                registry,
                status,
                new,
                error=error,
                error_message=error_message,
                stage=stage,
                now=now,
            )
            if new is QueueState.COMPLETED:
                write_stage(registry, group_id, stage, "done", detail, None)
            else:
                write_stage(registry, group_id, stage, "failed", error_message, error)
    finally:
        _ACTIVE_TOKENS.discard(owner.token)
    return status


def dead_attempts(
    registry: Registry,
    *,
    stage: str = "convert",
    now: float | None = None,
    foreign_lease_s: float = FOREIGN_LEASE_S,
) -> dict[str, Owner | None]:
    """Return the groups ``in_progress`` whose owner is dead (or unrecorded), with that owner."""
    rows = registry.query(
        "SELECT q.group_id, s.status, s.detail FROM processing_queue q"
        " LEFT JOIN stage_status s ON s.group_id = q.group_id AND s.stage = ?"
        " WHERE q.state = 'in_progress' ORDER BY q.group_id",
        (stage,),
    )
    found: dict[str, Owner | None] = {}
    for row in rows:
        owner = Owner.from_json(row["detail"]) if row["status"] == "running" else None
        if owner is None or not owner.is_alive(now=now, foreign_lease_s=foreign_lease_s):
            found[row["group_id"]] = owner
    return found


def requeue_dead_attempts(
    registry: Registry,
    *,
    stage: str = "convert",
    now: float | None = None,
    foreign_lease_s: float = FOREIGN_LEASE_S,
) -> dict[str, GroupStatus]:
    """Record every dead attempt as failed and, with retries left, put it back to ``pending``.

    For a sensor that requests ``pending`` groups (run key ``{group_id}:{retry_count}``: the
    retry count has grown, so the key is new). Each group moves in its own transaction,
    re-checked inside it, so a live worker's group is never touched. Returns the new status
    of every group found dead (``failed`` when its retries were exhausted).
    """
    now = time.time() if now is None else now
    moved: dict[str, GroupStatus] = {}
    for group_id in dead_attempts(registry, stage=stage, now=now, foreign_lease_s=foreign_lease_s):
        with registry.transaction():
            status = get_status(registry, group_id)
            if status.state is not QueueState.IN_PROGRESS:
                continue
            previous = get_owner(registry, group_id, stage)
            if previous is not None and previous.is_alive(now=now, foreign_lease_s=foreign_lease_s):
                continue
            status = _record_death(registry, status, previous, stage, now)
            if status.retry_count < MAX_RETRIES:
                status = _move(
                    registry,
                    status,
                    QueueState.PENDING,
                    error=None,
                    error_message=None,
                    stage=stage,
                    now=now,
                )
        moved[group_id] = status
    return moved


def count_by_state(registry: Registry) -> dict[str, int]:
    """Return the storage document's 'count by state', with every state present."""
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
