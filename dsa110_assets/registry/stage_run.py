"""One way to run a stage: record it running, then done, skipped or failed, never silent.

Every stage after ingest follows the same sequence: record ``running`` with what it is doing,
do the work, record ``done`` (or ``skipped``) with a summary, and on any exception record
``failed`` with one message shape, ``"{doing} failed: {reason}"`` and the exception's type in
``error``, then re-raise. :func:`stage_run` records into ``stage_status``;
:func:`attempt_run` records through the queue's owned attempt (the convert stage, see
:func:`dsa110_assets.registry.queue.claim`), whose ``finish`` also moves the group's state.
Both are the same :class:`StageRun` over a different :class:`StageLedger`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from dsa110_assets.registry.connection import Registry
from dsa110_assets.registry.queue import Owner, QueueState, finish
from dsa110_assets.registry.stages import StageOutcome, record_stage


class StageLedger(Protocol):
    """Where a stage's outcomes are written."""

    def record(self, outcome: StageOutcome, detail: str, error: str | None = None) -> None:
        """Record ``outcome`` with ``detail`` (and the exception type ``error`` on failure)."""


@dataclass(frozen=True)
class StageTable:
    """A ledger writing the ``stage_status`` row of one group and stage."""

    registry: Registry
    group_id: str
    stage: str

    def record(self, outcome: StageOutcome, detail: str, error: str | None = None) -> None:
        """Upsert the stage's row with ``outcome``."""
        record_stage(self.registry, self.group_id, self.stage, outcome, detail, error=error)


@dataclass(frozen=True)
class QueueAttempt:
    """A ledger finishing ``owner``'s claimed queue attempt (``completed`` or ``failed``).

    ``running`` is not written: the claim recorded the owner as the running row's detail, which
    the next attempt needs to tell a live attempt from a dead one.
    """

    registry: Registry
    group_id: str
    stage: str
    owner: Owner

    def record(self, outcome: StageOutcome, detail: str, error: str | None = None) -> None:
        """Finish the attempt for ``done`` or ``failed``; ``running`` is the claim's.

        Raises
        ------
        ValueError
            ``skipped``: a queue attempt ends completed or failed.
        """
        if outcome is StageOutcome.RUNNING:
            return
        if outcome not in (StageOutcome.DONE, StageOutcome.FAILED):
            raise ValueError(f"a queue attempt cannot end {outcome.value}")
        failed = outcome is StageOutcome.FAILED
        finish(
            self.registry,
            self.group_id,
            self.owner,
            QueueState.FAILED if failed else QueueState.COMPLETED,
            stage=self.stage,
            error=error,
            error_message=detail if failed else None,
            detail=None if failed else detail,
        )


def failure_message(doing: str, exc: BaseException) -> str:
    """Return the one shape of a failed stage's detail: ``"{doing} failed: {reason}"``.

    An exception without a message (``KeyboardInterrupt``, a bare ``MemoryError``) is named
    by its type, so the detail never ends in an empty reason.
    """
    return f"{doing} failed: {str(exc) or type(exc).__name__}"


class StageRun:
    """A running stage: :meth:`step` says what it does now, :meth:`done`/:meth:`skipped` end it."""

    def __init__(self, ledger: StageLedger, doing: str) -> None:
        self.ledger = ledger
        self.doing = doing
        self.closed = False

    def step(self, doing: str) -> None:
        """Record the stage running ``doing`` (also the prefix of a failure's message)."""
        self.doing = doing
        self.ledger.record(StageOutcome.RUNNING, doing)

    def done(self, detail: str) -> None:
        """Record the stage done with ``detail``."""
        self.closed = True
        self.ledger.record(StageOutcome.DONE, detail)

    def skipped(self, detail: str) -> None:
        """Record the stage skipped with ``detail`` (why nothing was done)."""
        self.closed = True
        self.ledger.record(StageOutcome.SKIPPED, detail)

    def fail(self, exc: BaseException) -> None:
        """Record the stage failed by ``exc`` (unless it already ended)."""
        if not self.closed:
            self.closed = True
            self.ledger.record(
                StageOutcome.FAILED, failure_message(self.doing, exc), type(exc).__name__
            )


@contextmanager
def run_in(ledger: StageLedger, doing: str) -> Iterator[StageRun]:
    """Run a stage recorded in ``ledger``; any exception is recorded as failed and re-raised.

    An exception raised after the stage was ended (:meth:`StageRun.done`) is re-raised without
    recording, so a refused ``finish`` is not overwritten by a second one.
    """
    run = StageRun(ledger, doing)
    run.step(doing)
    try:
        yield run
    except BaseException as exc:
        run.fail(exc)
        raise


def stage_run(registry: Registry, group_id: str, stage: str, doing: str):
    """Run ``stage`` of ``group_id`` recorded in ``stage_status`` (see :func:`run_in`).

    Returns
    -------
    contextlib.AbstractContextManager[StageRun]
        Enter it around the stage's work; call ``done``/``skipped`` on what it yields.
    """
    return run_in(StageTable(registry, group_id, stage), doing)


def attempt_run(registry: Registry, group_id: str, stage: str, owner: Owner, doing: str):
    """Run ``owner``'s claimed attempt, finishing it in the queue (see :func:`run_in`).

    Returns
    -------
    contextlib.AbstractContextManager[StageRun]
        Enter it after :func:`~dsa110_assets.registry.queue.claim`; ``done`` completes it.
    """
    return run_in(QueueAttempt(registry, group_id, stage, owner), doing)
