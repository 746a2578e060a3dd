"""Apply the best valid calibration to a group's Measurement Set, or say why not.

Which tables. The gains are the valid gain table whose validity window covers the target's
mid-time and whose solve is nearest in time (gains drift within the hour). The bandpass is,
among the valid bandpass tables covering the target, the one solved at the highest calibrator
beam response (``calibration_tables.beam_response``, compared to 3 decimals; ties go to the
nearest in time): the bandpass is stable for the day, and its noise scales with the
calibrator's apparent flux, so the best-placed calibrator group gives the best one.

Why a rebased bandpass when the two come from different solves. A solve's bandpass carries each
antenna's mean phase over its calibrator scan (it is normalised in amplitude only, with the
reference antenna at phase 0), and its gains were solved with that bandpass applied. Gains of
solve G and bandpass of solve B therefore disagree by a per-antenna, per-polarization phase
(the antenna phases of B's scan against G's, and any difference in reference antenna). So the
chosen bandpass is applied as B's channel shape with G's frequency-independent phase: each
antenna's B Jones values are multiplied by ``exp(i arg sum(B_G conj(B_B)))`` over the channels
both tables have unflagged, ``B_G`` being the bandpass of G's own solve. That derived table is
written once per pair in ``{caltables}/rebased/`` and is what ``ms_index.bandpass_table``
names. A gain table is used only when its own solve's bandpass is valid too.

A table that fails validation is marked ``invalid`` in ``calibration_tables`` and never
applied. With no valid tables the target waits (``ms_index.cal_status = 'waiting'``) for up to
the policy's wait after its MS was made, then is imaged from uncalibrated data
(``CORRECTED_DATA = DATA``, ``cal_status = 'uncalibrated'``), which its registry rows and
metadata say.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np
from casacore import tables as pt

from dsa110_assets.calibration import CalTableError, apply_calibration, read_caltable
from dsa110_assets.calibration.caltable import BANDPASS, CalTable
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
    """The tables applied together: ``bandpass`` (as applied) and ``gain``.

    ``calibrator`` and ``source_group`` are the gain solve's; ``bandpass_group`` the solve the
    bandpass shape comes from, ``bandpass_source`` its registered table (``bandpass`` itself
    unless it was rebased onto the gain solve, see the module docstring).
    """

    bandpass: Path
    gain: Path
    calibrator: str | None
    source_group: str | None
    bandpass_source: Path | None = None
    bandpass_group: str | None = None
    bandpass_calibrator: str | None = None
    bandpass_response: float | None = None

    @property
    def rebased(self) -> bool:
        return self.bandpass_source is not None and self.bandpass_source != self.bandpass


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


def _first_valid(
    registry: Registry, rows: list, paths_of: int, rejected: list[str]
) -> tuple | None:
    """The first of ``rows`` whose first ``paths_of`` columns all read back as tables.

    Tables that do not are marked ``invalid`` (so never considered again) with the reason
    appended to ``rejected``.
    """
    for row in rows:
        paths = [str(p) for p in tuple(row)[:paths_of]]
        problems = {p: r for p in paths if (r := _valid(Path(p))) is not None}
        if not problems:
            return tuple(row)
        with registry.transaction():
            for path, reason in problems.items():
                registry.execute(
                    "UPDATE calibration_tables SET status = 'invalid' WHERE path = ?", (path,)
                )
                rejected.append(f"{path}: {reason}")
    return None


def find_calibration(
    registry: Registry, mid_mjd: float, *, rebased_dir: Path | None = None
) -> tuple[CalPair | None, list[str]]:
    """The gain nearest in time and the best-response bandpass valid at ``mid_mjd``.

    Returns the pair (or None) and the reasons tables were rejected; rejected tables are
    marked ``invalid`` so they are never considered again. When the bandpass comes from
    another solve than the gains it is rebased onto the gains' own bandpass
    (:func:`rebase_bandpass`), written in ``rebased_dir`` (default: ``rebased/`` next to the
    chosen bandpass).
    """
    rejected: list[str] = []
    gains = registry.query(
        "SELECT g.path, b.path, g.calibrator, g.group_id FROM calibration_tables g"
        " JOIN calibration_tables b ON b.group_id = g.group_id AND b.table_type = 'bandpass'"
        " AND b.calibrator IS g.calibrator"
        " WHERE g.table_type = 'gain' AND g.status = 'valid' AND b.status = 'valid'"
        " AND g.valid_start_mjd <= ? AND g.valid_end_mjd >= ?"
        " ORDER BY ABS((g.valid_start_mjd + g.valid_end_mjd) / 2 - ?), g.created_at DESC",
        (mid_mjd, mid_mjd, mid_mjd),
    )
    gain = _first_valid(registry, gains, 2, rejected)
    if gain is None:
        return None, rejected
    gain_path, own_bandpass, calibrator, gain_group = gain
    bandpasses = registry.query(
        "SELECT path, group_id, calibrator, beam_response FROM calibration_tables"
        " WHERE table_type = 'bandpass' AND status = 'valid'"
        " AND valid_start_mjd <= ? AND valid_end_mjd >= ?"
        " ORDER BY ROUND(COALESCE(beam_response, -1), 3) DESC,"
        " ABS((valid_start_mjd + valid_end_mjd) / 2 - ?), created_at DESC",
        (mid_mjd, mid_mjd, mid_mjd),
    )
    best = _first_valid(registry, bandpasses, 1, rejected)
    if best is None:  # the gains' own bandpass was valid a moment ago: a concurrent invalidation
        return None, rejected
    best_path, best_group, best_calibrator, response = best
    applied = Path(best_path)
    if Path(best_path) != Path(own_bandpass):
        folder = rebased_dir if rebased_dir is not None else Path(best_path).parent / "rebased"
        applied = rebase_bandpass(
            Path(best_path),
            Path(own_bandpass),
            folder / f"{Path(best_path).stem}__for__{Path(gain_path).stem}.bcal",
        )
    pair = CalPair(
        bandpass=applied,
        gain=Path(gain_path),
        calibrator=calibrator,
        source_group=gain_group,
        bandpass_source=Path(best_path),
        bandpass_group=best_group,
        bandpass_calibrator=best_calibrator,
        bandpass_response=None if response is None else float(response),
    )
    return pair, rejected


def _spw_match(table: CalTable, reference: CalTable) -> dict[int, int]:
    """Window of ``table`` -> window of ``reference`` with the same channel frequencies."""
    matches: dict[int, int] = {}
    for s, freqs in enumerate(table.spw_chan_freq):
        for r, ref in enumerate(reference.spw_chan_freq):
            if ref.shape == freqs.shape and np.allclose(ref, freqs, rtol=0.0, atol=1.0):
                matches[s] = r
                break
    return matches


def rebase_bandpass(bandpass: Path, reference: Path, dest: Path) -> Path:
    """``bandpass`` with each antenna's phase tied to ``reference`` (another solve's bandpass).

    Per antenna (matched by NAME) and polarization, the values are multiplied by
    ``exp(i arg sum(ref conj(bp)))`` over the channels (of windows with the same frequencies)
    unflagged in both: the channel shape stays ``bandpass``'s, the frequency-independent phase
    becomes the one the reference solve's gains were solved against. Amplitudes are unchanged
    (both are normalised to mean amplitude 1). Antennas without common unflagged channels are
    left as they are (the gain solve had no solution for them either). ``dest`` is reused when
    it is newer than both inputs; it is built under a temporary name and renamed into place.

    Raises
    ------
    CalTableError
        Either table does not read back cleanly.
    """
    dest = Path(dest)
    if (dest / "table.dat").is_file() and _valid(dest) is None:
        built = dest.stat().st_mtime_ns
        if built >= max(Path(bandpass).stat().st_mtime_ns, Path(reference).stat().st_mtime_ns):
            return dest
    bp = read_caltable(bandpass, BANDPASS)
    ref = read_caltable(reference, BANDPASS)
    spw_map = _spw_match(bp, ref)
    ref_rows = {
        (int(s), ref.antenna_names[int(a)]): k
        for k, (s, a) in enumerate(zip(ref.spw_id, ref.antenna1, strict=True))
    }
    n_pol = bp.n_pol
    sums: dict[str, np.ndarray] = {}
    for k, (s, a) in enumerate(zip(bp.spw_id, bp.antenna1, strict=True)):
        name = bp.antenna_names[int(a)]
        r = ref_rows.get((spw_map.get(int(s), -1), name))
        if r is None or ref.cparam.shape[1:] != bp.cparam.shape[1:]:
            continue
        ok = ~bp.flag[k] & ~ref.flag[r]
        term = np.where(ok, ref.cparam[r] * np.conj(bp.cparam[k]), 0.0).sum(axis=0)
        sums[name] = sums.get(name, np.zeros(n_pol, np.complex128)) + term
    factors = {
        name: np.where(np.abs(v) > 0, v / np.maximum(np.abs(v), 1e-30), 1.0)
        for name, v in sums.items()
    }
    cparam = bp.cparam.astype(np.complex64).copy()
    for k, a in enumerate(bp.antenna1):
        factor = factors.get(bp.antenna_names[int(a)])
        if factor is not None:
            cparam[k] = (cparam[k] * factor[None, :]).astype(np.complex64)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(bandpass, tmp)
    try:
        with pt.table(str(tmp), readonly=False, ack=False) as t:
            t.putcol("CPARAM", cparam)
            t.putkeyword("DSA110_REBASED_ON", str(reference))
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


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
    outcome.details["bandpass_group"] = pair.bandpass_group or ""
    if pair.bandpass_response is not None:
        outcome.details["bandpass_beam_response"] = round(pair.bandpass_response, 4)
    outcome.details["bandpass_rebased"] = pair.rebased
    record_stage(
        registry,
        record.group_id,
        STAGE,
        StageOutcome.DONE,
        f"applied {pair.bandpass.name} + {pair.gain.name} in {outcome.duration_s:.1f} s"
        + (
            f" (bandpass of {pair.bandpass_group} rebased on the gains' solve)"
            if pair.rebased
            else ""
        ),
    )
    return outcome
