"""Apply the best calibration available now to a group's Measurement Set; never wait.

The calibration is chosen by :func:`dsa110_assets.processing.cal_choice.find_calibration`
(the group's own calibrator gains, interpolated, or the nearest, within ``gain_window_h``).
With no calibrator solution in the window, the group's own gains are solved against its
catalog field (:func:`~dsa110_assets.processing.calibrate_step.solve_field_model`,
``field-model``) when that solution has enough S/N, taking the day's best calibrator bandpass
when there is one, else its own normalised bandpass; else it is imaged at once from
uncalibrated data (``CORRECTED_DATA = DATA``, ``uncalibrated``): a quick look, which the
calibration sensor re-calibrates when a calibrator solution covering it appears
(:mod:`dsa110_assets.processing.recalibration`). The choice (method, tables, solves, ages in
hours) is recorded in ``ms_index.cal_method``, ``cal_age_h`` and ``cal_choice`` (JSON).
Every apply starts from the flagging step's flags (flag version ``flagged``), so the flags of
a solution replaced by a better one do not stay.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from casacore import tables as pt

from dsa110_assets.calibration import apply_calibration
from dsa110_assets.flagging.versions import list_flag_versions, restore_flag_version
from dsa110_assets.processing.cal_choice import (
    CalMethod,
    CalPair,
    GainSolve,
    best_bandpass,
    find_calibration,
    pair_for,
)
from dsa110_assets.processing.calibrate_step import (
    FIELD_MODEL,
    CalibrationPolicy,
    FieldSolveOutcome,
    solve_field_model,
)
from dsa110_assets.processing.flag_step import FLAGGED
from dsa110_assets.registry import Registry
from dsa110_assets.registry.products import MSRecord, record_calibration
from dsa110_assets.registry.stage_run import StageRun, stage_run
from dsa110_assets.settings import Settings
from dsa110_assets.timing import Stopwatch

STAGE = "apply"
_ROW_BLOCK = 200_000


class CalStatus(StrEnum):
    """Whether calibration was applied (``ms_index.cal_status``)."""

    APPLIED = "applied"
    UNCALIBRATED = "uncalibrated"


@dataclass
class ApplyOutcome:
    """What the apply stage did to a group (for the asset's metadata)."""

    status: CalStatus
    pair: CalPair | None = None
    method: CalMethod = CalMethod.UNCALIBRATED
    rejected: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    details: dict[str, object] = field(default_factory=dict)


def reset_corrected_data(ms_path: Path) -> int:
    """Set ``CORRECTED_DATA = DATA`` (FLAG untouched), the uncalibrated state; return the rows."""
    with pt.table(str(ms_path), readonly=False, ack=False) as t:
        n = t.nrows()
        for start in range(0, n, _ROW_BLOCK):
            nrow = min(_ROW_BLOCK, n - start)
            t.putcol("CORRECTED_DATA", t.getcol("DATA", start, nrow), start, nrow)
    return n


def choice_record(pair: CalPair | None, method: CalMethod, **extra: object) -> dict[str, object]:
    """Return what was chosen, for ``ms_index.cal_choice`` (JSON) and the asset metadata."""
    record: dict[str, object] = {"method": method.value}
    if pair is not None:
        record.update(
            bandpass_table=str(pair.bandpass),
            bandpass_source=str(pair.bandpass_source or pair.bandpass),
            bandpass_group=pair.bandpass_group,
            bandpass_calibrator=pair.bandpass_calibrator,
            bandpass_beam_response=pair.bandpass_response,
            gain_table=str(pair.gain),
            age_h=None if pair.age_h is None else round(pair.age_h, 4),
            gain_solves=[
                {
                    "gain_table": str(s.gain),
                    "group_id": s.group_id,
                    "calibrator": s.calibrator,
                    "age_h": round(abs(s.centre_mjd - extra.get("mid_mjd", s.centre_mjd)) * 24, 4)
                    if isinstance(extra.get("mid_mjd"), float)
                    else None,
                }
                for s in pair.gain_solves
            ],
        )
    record.update({k: v for k, v in extra.items() if k != "mid_mjd"})
    return record


def _update_ms(
    registry: Registry,
    record: MSRecord,
    status: CalStatus,
    pair: CalPair | None,
    method: CalMethod,
    choice: dict[str, object],
) -> None:
    """Record the calibration applied (or not) to ``record``'s MS in ``ms_index``."""
    applied = status is CalStatus.APPLIED
    record_calibration(
        registry,
        record.path,
        {
            "cal_applied": int(applied),
            "cal_status": status.value,
            "bandpass_table": str(pair.bandpass) if pair else None,
            "gain_table": str(pair.gain) if pair else None,
            "stage": "calibrated" if applied else STAGE,
            "cal_method": method.value,
            "cal_age_h": pair.age_h if pair else None,
            "cal_choice": json.dumps(choice),
        },
    )


def _field_model_pair(
    settings: Settings,
    registry: Registry,
    record: MSRecord,
    policy: CalibrationPolicy,
    rejected: list[str],
) -> tuple[CalPair | None, FieldSolveOutcome]:
    """Return gains solved against the group's catalog field, with a bandpass to apply.

    The day's best calibrator bandpass is rebased onto that solve when there is one, else the
    solve's own normalised bandpass is applied.
    """
    solved = solve_field_model(settings, registry, record, policy)
    if solved.tables is None:
        return None, solved
    bandpass, gain = solved.tables
    solve = GainSolve(gain, bandpass, FIELD_MODEL, record.group_id, record.mid_mjd)
    best = best_bandpass(registry, record.mid_mjd, rejected)
    pair = pair_for(solve, gain, best, None, CalMethod.FIELD_MODEL, 0.0, (solve,))
    return pair, solved


def _field_model_details(solved: FieldSolveOutcome) -> dict[str, object]:
    """Return what the field-model solve did, for the choice record."""
    details: dict[str, object] = {
        "field_sources": len(solved.sources),
        "field_median_snr": round(solved.median_snr, 2),
        "field_solve_s": round(solved.solve_s, 2),
    }
    if solved.reason:
        details["field_model_refused"] = solved.reason
    return details


def _uncalibrated(
    registry: Registry,
    record: MSRecord,
    policy: CalibrationPolicy,
    run: StageRun,
    rejected: list[str],
    extra: dict[str, object],
) -> ApplyOutcome:
    """Leave the MS uncalibrated (``CORRECTED_DATA = DATA``), a quick look, and say why."""
    reset_corrected_data(record.path)
    outcome = ApplyOutcome(CalStatus.UNCALIBRATED, rejected=rejected)
    outcome.details = choice_record(None, CalMethod.UNCALIBRATED, **extra)
    _update_ms(
        registry, record, CalStatus.UNCALIBRATED, None, CalMethod.UNCALIBRATED, outcome.details
    )
    why = extra.get("field_model_refused", "no field model")
    run.skipped(
        f"no calibrator solution within {policy.gain_window_h:g} h ({why}); imaged "
        "uncalibrated as a quick look"
    )
    return outcome


def _applied_detail(pair: CalPair, duration_s: float) -> str:
    """Return the done message of an applied calibration."""
    age = "" if pair.age_h is None else f", {pair.age_h:.2f} h away"
    rebased = (
        f" (bandpass of {pair.bandpass_group} rebased on the gains' solve)" if pair.rebased else ""
    )
    return (
        f"{pair.method.value}: applied {pair.bandpass.name} + {pair.gain.name}{age} in "
        f"{duration_s:.1f} s{rebased}"
    )


def _apply(
    registry: Registry,
    record: MSRecord,
    pair: CalPair,
    rejected: list[str],
    extra: dict[str, object],
    watch: Stopwatch,
) -> ApplyOutcome:
    """Apply ``pair`` into CORRECTED_DATA and record it."""
    result = apply_calibration(record.path, pair.bandpass, pair.gain)
    outcome = ApplyOutcome(CalStatus.APPLIED, pair=pair, method=pair.method, rejected=rejected)
    outcome.duration_s = watch.elapsed_s
    outcome.details = choice_record(pair, pair.method, **extra)
    _update_ms(registry, record, CalStatus.APPLIED, pair, pair.method, outcome.details)
    outcome.details["flagged_fraction"] = round(result.flagged_fraction, 4)
    outcome.details["rows"] = result.n_rows
    outcome.details["bandpass_rebased"] = pair.rebased
    return outcome


def _start_from_flagging_result(ms_path: Path) -> None:
    """Restore the flags the flagging step left (``flagged``), when it saved them.

    Applying ORs the flags of missing solutions into FLAG; re-calibrating a group with a
    better solution must not keep the flags of the one it replaces, so every apply starts
    from the flagging step's result.
    """
    if any(v.name == FLAGGED for v in list_flag_versions(ms_path)):
        restore_flag_version(ms_path, FLAGGED)


def apply_and_register(
    registry: Registry,
    record: MSRecord,
    policy: CalibrationPolicy,
    *,
    settings: Settings | None = None,
) -> ApplyOutcome:
    """Calibrate ``record``'s MS into CORRECTED_DATA with the best calibration available now.

    Never waits: with no calibrator solution in the window and no acceptable field-model
    solve (which needs ``settings`` for the catalogs), ``CORRECTED_DATA = DATA`` and the group
    is recorded ``uncalibrated`` (a quick look the calibration sensor re-calibrates later).
    """
    watch = Stopwatch()
    with stage_run(registry, record.group_id, STAGE, "choosing a calibration") as run:
        _start_from_flagging_result(record.path)
        pair, rejected = find_calibration(
            registry, record.mid_mjd, window_h=policy.gain_window_h, group_id=record.group_id
        )
        extra: dict[str, object] = {"mid_mjd": float(record.mid_mjd)}
        if pair is None and policy.field_model and settings is not None:
            run.step("solving on the field model")
            pair, solved = _field_model_pair(settings, registry, record, policy, rejected)
            extra.update(_field_model_details(solved))
        if pair is None:
            outcome = _uncalibrated(registry, record, policy, run, rejected, extra)
            outcome.duration_s = watch.elapsed_s
            return outcome
        run.step(f"applying {pair.gain}")
        outcome = _apply(registry, record, pair, rejected, extra, watch)
        run.done(_applied_detail(pair, outcome.duration_s))
    return outcome
