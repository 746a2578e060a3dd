"""Apply the nearest valid calibration to a group's Measurement Set, or say why not.

Tables are used as a pair from one calibrator group: the gains were solved with that
bandpass applied, so mixing tables of different solves would be wrong. The pair whose gain
validity window covers the target's mid-time and whose solve is closest in time wins; a table
that fails validation is marked ``invalid`` in ``calibration_tables`` and never applied. With
no valid pair the target waits (``ms_index.cal_status = 'waiting'``) for up to the policy's
wait after its MS was made, then is imaged from uncalibrated data (``CORRECTED_DATA = DATA``,
``cal_status = 'uncalibrated'``), which its registry rows and metadata say.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from casacore import tables as pt

from dsa110_assets.calibration import CalTableError, apply_calibration, read_caltable
from dsa110_assets.processing.calibrate_step import CalibrationPolicy, MSRecord
from dsa110_assets.registry import Registry, StageOutcome, record_stage

STAGE = "apply"
_ROW_BLOCK = 200_000


class CalStatus(StrEnum):
    APPLIED = "applied"
    WAITING = "waiting"
    UNCALIBRATED = "uncalibrated"


@dataclass(frozen=True)
class CalPair:
    bandpass: Path
    gain: Path
    calibrator: str | None
    source_group: str | None


@dataclass
class ApplyOutcome:
    status: CalStatus
    pair: CalPair | None = None
    wait_left_s: float = 0.0
    rejected: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    details: dict[str, object] = field(default_factory=dict)


def _valid(path: Path) -> str | None:
    """None when the table reads back cleanly, else the reason it may not be applied."""
    try:
        read_caltable(path)
    except CalTableError as exc:
        return str(exc)
    return None


def find_calibration(registry: Registry, mid_mjd: float) -> tuple[CalPair | None, list[str]]:
    """The nearest valid (bandpass, gain) pair for an observation at ``mid_mjd``.

    Returns the pair (or None) and the reasons tables were rejected; rejected tables are
    marked ``invalid`` so they are never considered again.
    """
    candidates = registry.query(
        "SELECT g.path, b.path, g.calibrator, g.group_id FROM calibration_tables g"
        " JOIN calibration_tables b ON b.group_id = g.group_id AND b.table_type = 'bandpass'"
        " AND b.calibrator IS g.calibrator"
        " WHERE g.table_type = 'gain' AND g.status = 'valid' AND b.status = 'valid'"
        " AND g.valid_start_mjd <= ? AND g.valid_end_mjd >= ?"
        " AND b.valid_start_mjd <= ? AND b.valid_end_mjd >= ?"
        " ORDER BY ABS((g.valid_start_mjd + g.valid_end_mjd) / 2 - ?), g.created_at DESC",
        (mid_mjd, mid_mjd, mid_mjd, mid_mjd, mid_mjd),
    )
    rejected: list[str] = []
    for gain, bandpass, calibrator, group in candidates:
        problems = {p: r for p in (bandpass, gain) if (r := _valid(Path(p))) is not None}
        if not problems:
            return CalPair(Path(bandpass), Path(gain), calibrator, group), rejected
        with registry.transaction():
            for path, reason in problems.items():
                registry.execute(
                    "UPDATE calibration_tables SET status = 'invalid' WHERE path = ?", (path,)
                )
                rejected.append(f"{path}: {reason}")
    return None, rejected


def reset_corrected_data(ms_path: Path) -> int:
    """``CORRECTED_DATA = DATA`` (and FLAG untouched): the uncalibrated state. Returns rows."""
    with pt.table(str(ms_path), readonly=False, ack=False) as t:
        n = t.nrows()
        for start in range(0, n, _ROW_BLOCK):
            nrow = min(_ROW_BLOCK, n - start)
            t.putcol("CORRECTED_DATA", t.getcol("DATA", start, nrow), start, nrow)
    return n


def _update_ms(
    registry: Registry, record: MSRecord, status: CalStatus, pair: CalPair | None
) -> None:
    with registry.transaction():
        registry.execute(
            "UPDATE ms_index SET cal_applied = ?, cal_status = ?, bandpass_table = ?,"
            " gain_table = ?, stage = ? WHERE path = ?",
            (
                int(status is CalStatus.APPLIED),
                status.value,
                str(pair.bandpass) if pair else None,
                str(pair.gain) if pair else None,
                "calibrated" if status is CalStatus.APPLIED else STAGE,
                str(record.path),
            ),
        )


def apply_and_register(
    registry: Registry,
    record: MSRecord,
    policy: CalibrationPolicy,
    *,
    now: float | None = None,
) -> ApplyOutcome:
    """Calibrate ``record``'s MS into CORRECTED_DATA, or wait, or give up waiting."""
    now = time.time() if now is None else now
    started = time.perf_counter()
    pair, rejected = find_calibration(registry, record.mid_mjd)
    if pair is None:
        waited = now - (record.created_at or now)
        if waited < policy.wait_s:
            outcome = ApplyOutcome(CalStatus.WAITING, wait_left_s=policy.wait_s - waited)
            outcome.rejected = rejected
            _update_ms(registry, record, CalStatus.WAITING, None)
            record_stage(
                registry,
                record.group_id,
                STAGE,
                StageOutcome.WAITING,
                f"no valid calibration yet; waiting up to {outcome.wait_left_s:.0f} s more",
            )
            return outcome
        reset_corrected_data(record.path)
        outcome = ApplyOutcome(CalStatus.UNCALIBRATED, rejected=rejected)
        _update_ms(registry, record, CalStatus.UNCALIBRATED, None)
        record_stage(
            registry,
            record.group_id,
            STAGE,
            StageOutcome.SKIPPED,
            f"no valid calibration within {policy.wait_s:.0f} s; imaged uncalibrated",
        )
        outcome.duration_s = time.perf_counter() - started
        return outcome
    record_stage(registry, record.group_id, STAGE, StageOutcome.RUNNING, f"applying {pair.gain}")
    try:
        result = apply_calibration(record.path, pair.bandpass, pair.gain)
    except BaseException as exc:
        record_stage(
            registry,
            record.group_id,
            STAGE,
            StageOutcome.FAILED,
            f"applying {pair.gain.name} failed: {exc}",
            error=type(exc).__name__,
        )
        raise
    _update_ms(registry, record, CalStatus.APPLIED, pair)
    outcome = ApplyOutcome(CalStatus.APPLIED, pair=pair, rejected=rejected)
    outcome.duration_s = time.perf_counter() - started
    outcome.details["flagged_fraction"] = round(result.flagged_fraction, 4)
    outcome.details["rows"] = result.n_rows
    record_stage(
        registry,
        record.group_id,
        STAGE,
        StageOutcome.DONE,
        f"applied {pair.bandpass.name} + {pair.gain.name} in {outcome.duration_s:.1f} s",
    )
    return outcome
