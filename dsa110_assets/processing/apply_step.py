"""Apply the best calibration available now to a group's Measurement Set; never wait.

Which gains. Among the valid calibrator gain solutions (``solved_against = 'calibrator'``)
within ``gain_window_h`` (default 12 h) of the target's mid-time: the group's own when it is
a calibrator group (``calibrator``); else interpolated linearly in time between the nearest
solution before and the nearest after (``interpolated``); else the nearest on the one side
there is (``nearest``). DSA-110 sees a given calibrator once a day per pointing, so the
+/-12 h window lets one transit calibrate the day. With no calibrator solution in the window,
the group's own gains are solved against its catalog field
(:func:`~dsa110_assets.processing.calibrate_step.solve_field_model`, ``field-model``) when
that solution has enough S/N; else it is imaged at once from uncalibrated data
(``CORRECTED_DATA = DATA``, ``uncalibrated``): a quick look, which the calibration sensor
re-calibrates when a calibrator solution covering it appears. The choice (method, tables,
solves, ages in hours) is recorded in ``ms_index.cal_method``, ``cal_age_h`` and
``cal_choice`` (JSON).

Which bandpass. Among the valid calibrator bandpass tables covering the target, the one
solved at the highest calibrator beam response (``calibration_tables.beam_response``,
compared to 3 decimals; ties go to the nearest in time): the bandpass is stable for the day,
and its noise scales with the calibrator's apparent flux. A field-model solve takes the same
best calibrator bandpass when there is one, else its own normalised bandpass.

Why a rebased bandpass when the two come from different solves. A solve's bandpass carries each
antenna's mean phase over its calibrator scan (it is normalised in amplitude only, with the
reference antenna at phase 0), and its gains were solved with that bandpass applied. Gains of
solve G and bandpass of solve B therefore disagree by a per-antenna, per-polarization phase
(the antenna phases of B's scan against G's, and any difference in reference antenna). So the
chosen bandpass is applied as B's channel shape with G's frequency-independent phase: each
antenna's B Jones values are multiplied by ``exp(i arg sum(B_G conj(B_B)))`` over the channels
both tables have unflagged, ``B_G`` being the bandpass of G's own solve. That derived table is
written once per pair in ``{caltables}/rebased/`` and is what ``ms_index.bandpass_table``
names. A gain table is used only when its own solve's bandpass is valid too. Interpolated
gains are one derived G table (``{caltables}/interpolated/``): the nearer solve's gains plus
the other's, each of the other's multiplied by ``B_other / B_nearer`` (the same per-antenna
phase) so both express the total gain against one bandpass, and the apply step interpolates
between them in time.

A table that fails validation is marked ``invalid`` in ``calibration_tables`` and never
applied.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np
from casacore import tables as pt

from dsa110_assets.calibration import CalTableError, apply_calibration, read_caltable
from dsa110_assets.calibration.caltable import BANDPASS, GAIN, CalTable
from dsa110_assets.processing.calibrate_step import (
    FIELD_MODEL,
    CalibrationPolicy,
    FieldSolveOutcome,
    MSRecord,
    solve_field_model,
)
from dsa110_assets.registry import Registry, StageOutcome, record_stage
from dsa110_assets.settings import Settings

STAGE = "apply"
_ROW_BLOCK = 200_000


class CalStatus(StrEnum):
    APPLIED = "applied"
    UNCALIBRATED = "uncalibrated"


class CalMethod(StrEnum):
    """How a group was calibrated, best first (see the module docstring)."""

    CALIBRATOR = "calibrator"
    INTERPOLATED = "interpolated"
    NEAREST = "nearest"
    FIELD_MODEL = "field-model"
    UNCALIBRATED = "uncalibrated"


#: Calibrator-referenced methods: what the calibration sensor re-calibrates quick looks to.
CALIBRATOR_METHODS = (CalMethod.CALIBRATOR, CalMethod.INTERPOLATED, CalMethod.NEAREST)
#: A solution this close to the target (days) is the target's own transit, not a neighbour.
_OWN_SOLVE_D = 3.0 / 1440


@dataclass(frozen=True)
class GainSolve:
    """A registered gain solution and its own bandpass (one calibrator or field solve)."""

    gain: Path
    bandpass: Path
    calibrator: str | None
    group_id: str | None
    centre_mjd: float


@dataclass(frozen=True)
class GainChoice:
    """Which gain solves calibrate a target, and how: the first is the nearer one."""

    method: CalMethod
    solves: tuple[GainSolve, ...]
    age_h: float

    @property
    def key(self) -> str:
        """Stable identity of the choice (the calibration sensor's run key)."""
        groups = ",".join(str(s.group_id) for s in self.solves)
        return f"{self.method.value}:{groups}"


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
    method: CalMethod = CalMethod.NEAREST
    age_h: float | None = None
    gain_solves: tuple[GainSolve, ...] = ()

    @property
    def rebased(self) -> bool:
        return self.bandpass_source is not None and self.bandpass_source != self.bandpass


@dataclass
class ApplyOutcome:
    status: CalStatus
    pair: CalPair | None = None
    method: CalMethod = CalMethod.UNCALIBRATED
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


def choose_gains(
    registry: Registry,
    mid_mjd: float,
    *,
    window_h: float = 12.0,
    group_id: str | None = None,
) -> tuple[GainChoice | None, list[str]]:
    """The calibrator gain solves for a target at ``mid_mjd`` (see the module docstring).

    Only ``solved_against = 'calibrator'`` solutions whose own bandpass is valid and whose
    centre is within ``window_h`` hours are considered. Tables that do not read back are
    marked ``invalid`` (reasons returned) and the next candidate is taken. Writes nothing
    else: the calibration sensor asks this without calibrating.
    """
    rejected: list[str] = []
    window_d = window_h / 24.0
    rows = registry.query(
        "SELECT g.path, b.path, g.calibrator, g.group_id,"
        " (g.valid_start_mjd + g.valid_end_mjd) / 2 AS centre FROM calibration_tables g"
        " JOIN calibration_tables b ON b.group_id = g.group_id AND b.table_type = 'bandpass'"
        " AND b.calibrator IS g.calibrator AND b.solved_against = g.solved_against"
        " WHERE g.table_type = 'gain' AND g.status = 'valid' AND b.status = 'valid'"
        " AND g.solved_against = 'calibrator'"
        " AND ABS((g.valid_start_mjd + g.valid_end_mjd) / 2 - ?) <= ?"
        " ORDER BY ABS((g.valid_start_mjd + g.valid_end_mjd) / 2 - ?), g.created_at DESC",
        (mid_mjd, window_d, mid_mjd),
    )
    solves = [GainSolve(Path(r[0]), Path(r[1]), r[2], r[3], float(r[4])) for r in rows]
    own = [
        s for s in solves if s.group_id == group_id or abs(s.centre_mjd - mid_mjd) < _OWN_SOLVE_D
    ]
    before = [s for s in solves if s.centre_mjd <= mid_mjd and s not in own]
    after = [s for s in solves if s.centre_mjd > mid_mjd and s not in own]

    def first_valid(candidates: list[GainSolve]) -> GainSolve | None:
        found = _first_valid(
            registry,
            [(str(c.gain), str(c.bandpass), i) for i, c in enumerate(candidates)],
            2,
            rejected,
        )
        return None if found is None else candidates[int(found[2])]

    def age(solve: GainSolve) -> float:
        return abs(solve.centre_mjd - mid_mjd) * 24.0

    mine = first_valid(own)
    if mine is not None:
        return GainChoice(CalMethod.CALIBRATOR, (mine,), age(mine)), rejected
    earlier, later = first_valid(before), first_valid(after)
    if earlier is not None and later is not None:
        pair = sorted((earlier, later), key=age)
        return GainChoice(CalMethod.INTERPOLATED, tuple(pair), age(pair[0])), rejected
    one = earlier or later
    if one is None:
        return None, rejected
    return GainChoice(CalMethod.NEAREST, (one,), age(one)), rejected


def best_bandpass(
    registry: Registry, mid_mjd: float, rejected: list[str]
) -> tuple[Path, str | None, str | None, float | None] | None:
    """The valid calibrator bandpass covering ``mid_mjd`` solved at the highest beam response
    (ties: nearest in time): ``(path, group_id, calibrator, beam_response)`` or None.
    """
    bandpasses = registry.query(
        "SELECT path, group_id, calibrator, beam_response FROM calibration_tables"
        " WHERE table_type = 'bandpass' AND status = 'valid' AND solved_against = 'calibrator'"
        " AND valid_start_mjd <= ? AND valid_end_mjd >= ?"
        " ORDER BY ROUND(COALESCE(beam_response, -1), 3) DESC,"
        " ABS((valid_start_mjd + valid_end_mjd) / 2 - ?), created_at DESC",
        (mid_mjd, mid_mjd, mid_mjd),
    )
    best = _first_valid(registry, bandpasses, 1, rejected)
    if best is None:
        return None
    path, group, calibrator, response = best
    return Path(path), group, calibrator, None if response is None else float(response)


def _pair_for(
    solve: GainSolve,
    gain: Path,
    bandpass: tuple[Path, str | None, str | None, float | None] | None,
    rebased_dir: Path | None,
    method: CalMethod,
    age_h: float | None,
    solves: tuple[GainSolve, ...],
) -> CalPair:
    """The pair applying ``gain`` (of ``solve``) with ``bandpass`` rebased onto the solve's own
    bandpass (or the solve's own bandpass when there is no better one).
    """
    best_path, best_group, best_calibrator, response = bandpass or (
        solve.bandpass,
        solve.group_id,
        solve.calibrator,
        None,
    )
    applied = best_path
    if best_path != solve.bandpass:
        folder = rebased_dir if rebased_dir is not None else best_path.parent / "rebased"
        applied = rebase_bandpass(
            best_path,
            solve.bandpass,
            folder / f"{best_path.stem}__for__{solve.gain.stem}.bcal",
        )
    return CalPair(
        bandpass=applied,
        gain=gain,
        calibrator=solve.calibrator,
        source_group=solve.group_id,
        bandpass_source=best_path,
        bandpass_group=best_group,
        bandpass_calibrator=best_calibrator,
        bandpass_response=response,
        method=method,
        age_h=age_h,
        gain_solves=solves,
    )


def find_calibration(
    registry: Registry,
    mid_mjd: float,
    *,
    rebased_dir: Path | None = None,
    window_h: float = 12.0,
    group_id: str | None = None,
) -> tuple[CalPair | None, list[str]]:
    """The calibrator calibration for a target at ``mid_mjd``: gains by :func:`choose_gains`,
    the best-response bandpass rebased onto the (nearer) gain solve.

    Returns the pair (or None) and the reasons tables were rejected (marked ``invalid``).
    Interpolated gains are merged into one table (:func:`merge_gain_tables`) in
    ``interpolated/`` beside the nearer gain table.
    """
    choice, rejected = choose_gains(registry, mid_mjd, window_h=window_h, group_id=group_id)
    if choice is None:
        return None, rejected
    best = best_bandpass(registry, mid_mjd, rejected)
    if best is None:  # the gains' own bandpass was valid a moment ago: a concurrent invalidation
        return None, rejected
    nearer = choice.solves[0]
    gain = nearer.gain
    if choice.method is CalMethod.INTERPOLATED:
        other = choice.solves[1]
        gain = merge_gain_tables(
            nearer.gain,
            nearer.bandpass,
            other.gain,
            other.bandpass,
            nearer.gain.parent / "interpolated" / f"{nearer.gain.stem}__{other.gain.stem}.gcal",
        )
    pair = _pair_for(nearer, gain, best, rebased_dir, choice.method, choice.age_h, choice.solves)
    return pair, rejected


def _phase_factors(bandpass: Path, reference: Path) -> tuple[CalTable, dict[str, np.ndarray]]:
    """Per antenna name, ``exp(i arg sum(ref conj(bp)))`` per polarization over the channels
    unflagged in both (windows matched by frequency), and ``bandpass`` as read.
    """
    bp = read_caltable(bandpass, BANDPASS)
    ref = read_caltable(reference, BANDPASS)
    spw_map = _spw_match(bp, ref)
    ref_rows = {
        (int(s), ref.antenna_names[int(a)]): k
        for k, (s, a) in enumerate(zip(ref.spw_id, ref.antenna1, strict=True))
    }
    sums: dict[str, np.ndarray] = {}
    for k, (s, a) in enumerate(zip(bp.spw_id, bp.antenna1, strict=True)):
        name = bp.antenna_names[int(a)]
        r = ref_rows.get((spw_map.get(int(s), -1), name))
        if r is None or ref.cparam.shape[1:] != bp.cparam.shape[1:]:
            continue
        ok = ~bp.flag[k] & ~ref.flag[r]
        term = np.where(ok, ref.cparam[r] * np.conj(bp.cparam[k]), 0.0).sum(axis=0)
        sums[name] = sums.get(name, np.zeros(bp.n_pol, np.complex128)) + term
    factors = {
        name: np.where(np.abs(v) > 0, v / np.maximum(np.abs(v), 1e-30), 1.0)
        for name, v in sums.items()
    }
    return bp, factors


def merge_gain_tables(
    gain: Path, bandpass: Path, other_gain: Path, other_bandpass: Path, dest: Path
) -> Path:
    """One G table: ``gain``'s solutions plus ``other_gain``'s re-expressed against
    ``bandpass``, so the apply step interpolates between the two solves in time.

    Solve X models the data as ``g_X B_X``; against bandpass ``B`` the same total gain is
    ``g_X B_X / B``, i.e. ``g_X`` times each antenna's phase ``exp(i arg sum(B_X conj(B)))``
    (both bandpasses have mean amplitude 1). The tables must share antennas (by name, in the
    same order) and windows; ``dest`` is reused when newer than all four inputs, else built
    under a temporary name and renamed into place.

    Raises
    ------
    CalTableError
        A table does not read back, or the two gain tables do not share antennas/windows.
    """
    dest = Path(dest)
    inputs = (gain, bandpass, other_gain, other_bandpass)
    newest = max(Path(p).stat().st_mtime_ns for p in inputs)
    if (
        (dest / "table.dat").is_file()
        and _valid(dest) is None
        and dest.stat().st_mtime_ns >= newest
    ):
        return dest
    first = read_caltable(gain, GAIN)
    second = read_caltable(other_gain, GAIN)
    same_windows = _spw_match(second, first) == {i: i for i in range(len(second.spw_chan_freq))}
    if first.antenna_names != second.antenna_names or not same_windows:
        raise CalTableError(f"{gain} and {other_gain} differ in antennas or windows")
    _, factors = _phase_factors(bandpass, other_bandpass)
    cparam = _times_factors(second, factors)
    with _rebuilt_table(gain, dest) as out:
        n0 = out.nrows()
        with pt.table(str(other_gain), ack=False) as extra:
            extra.copyrows(out)
        out.putcol("CPARAM", cparam, n0, len(cparam))
        out.putkeyword("DSA110_MERGED_FROM", f"{gain};{other_gain}")
    return dest


def _times_factors(table: CalTable, factors: dict[str, np.ndarray]) -> np.ndarray:
    """``table``'s CPARAM with each antenna's rows multiplied by its per-polarization factor
    (antennas without one unchanged), as complex64 for a CASA table.
    """
    cparam = table.cparam.astype(np.complex64).copy()
    for k, a in enumerate(table.antenna1):
        factor = factors.get(table.antenna_names[int(a)])
        if factor is not None:
            cparam[k] = (cparam[k] * factor[None, :]).astype(np.complex64)
    return cparam


@contextmanager
def _rebuilt_table(source: Path, dest: Path) -> Iterator[pt.table]:
    """A writable copy of the CASA table ``source``, published as ``dest`` when the block
    ends without error: built under a hidden temporary name beside ``dest`` (same
    filesystem) and renamed into place, so a reader never opens a half-written table.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    try:
        with pt.table(str(tmp), readonly=False, ack=False) as table:
            yield table
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
    bp, factors = _phase_factors(bandpass, reference)
    cparam = _times_factors(bp, factors)
    with _rebuilt_table(bandpass, dest) as table:
        table.putcol("CPARAM", cparam)
        table.putkeyword("DSA110_REBASED_ON", str(reference))
    return dest


def reset_corrected_data(ms_path: Path) -> int:
    """``CORRECTED_DATA = DATA`` (and FLAG untouched): the uncalibrated state. Returns rows."""
    with pt.table(str(ms_path), readonly=False, ack=False) as t:
        n = t.nrows()
        for start in range(0, n, _ROW_BLOCK):
            nrow = min(_ROW_BLOCK, n - start)
            t.putcol("CORRECTED_DATA", t.getcol("DATA", start, nrow), start, nrow)
    return n


def choice_record(pair: CalPair | None, method: CalMethod, **extra: object) -> dict[str, object]:
    """What was chosen, for ``ms_index.cal_choice`` (JSON) and the asset metadata."""
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
    with registry.transaction():
        registry.execute(
            "UPDATE ms_index SET cal_applied = ?, cal_status = ?, bandpass_table = ?,"
            " gain_table = ?, stage = ?, cal_method = ?, cal_age_h = ?, cal_choice = ?"
            " WHERE path = ?",
            (
                int(status is CalStatus.APPLIED),
                status.value,
                str(pair.bandpass) if pair else None,
                str(pair.gain) if pair else None,
                "calibrated" if status is CalStatus.APPLIED else STAGE,
                method.value,
                pair.age_h if pair else None,
                json.dumps(choice),
                str(record.path),
            ),
        )


def _field_model_pair(
    settings: Settings,
    registry: Registry,
    record: MSRecord,
    policy: CalibrationPolicy,
    rejected: list[str],
) -> tuple[CalPair | None, FieldSolveOutcome]:
    """Gains solved against the group's catalog field; the best calibrator bandpass of the
    day rebased onto that solve when there is one, else the solve's own normalised one.
    """
    solved = solve_field_model(settings, registry, record, policy)
    if solved.tables is None:
        return None, solved
    bandpass, gain = solved.tables
    solve = GainSolve(gain, bandpass, FIELD_MODEL, record.group_id, record.mid_mjd)
    best = best_bandpass(registry, record.mid_mjd, rejected)
    pair = _pair_for(solve, gain, best, None, CalMethod.FIELD_MODEL, 0.0, (solve,))
    return pair, solved


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
    started = time.perf_counter()
    pair, rejected = find_calibration(
        registry, record.mid_mjd, window_h=policy.gain_window_h, group_id=record.group_id
    )
    extra: dict[str, object] = {"mid_mjd": float(record.mid_mjd)}
    if pair is None and policy.field_model and settings is not None:
        record_stage(
            registry, record.group_id, STAGE, StageOutcome.RUNNING, "solving on the field model"
        )
        pair, solved = _field_model_pair(settings, registry, record, policy, rejected)
        extra.update(
            field_sources=len(solved.sources),
            field_median_snr=round(solved.median_snr, 2),
            field_solve_s=round(solved.solve_s, 2),
        )
        if solved.reason:
            extra["field_model_refused"] = solved.reason
    if pair is None:
        reset_corrected_data(record.path)
        outcome = ApplyOutcome(CalStatus.UNCALIBRATED, rejected=rejected)
        outcome.details = choice_record(None, CalMethod.UNCALIBRATED, **extra)
        _update_ms(
            registry, record, CalStatus.UNCALIBRATED, None, CalMethod.UNCALIBRATED, outcome.details
        )
        why = extra.get("field_model_refused", "no field model")
        record_stage(
            registry,
            record.group_id,
            STAGE,
            StageOutcome.SKIPPED,
            f"no calibrator solution within {policy.gain_window_h:g} h ({why}); imaged "
            "uncalibrated as a quick look",
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
    outcome = ApplyOutcome(CalStatus.APPLIED, pair=pair, method=pair.method, rejected=rejected)
    outcome.duration_s = time.perf_counter() - started
    outcome.details = choice_record(pair, pair.method, **extra)
    _update_ms(registry, record, CalStatus.APPLIED, pair, pair.method, outcome.details)
    outcome.details["flagged_fraction"] = round(result.flagged_fraction, 4)
    outcome.details["rows"] = result.n_rows
    outcome.details["bandpass_rebased"] = pair.rebased
    age = "" if pair.age_h is None else f", {pair.age_h:.2f} h away"
    record_stage(
        registry,
        record.group_id,
        STAGE,
        StageOutcome.DONE,
        f"{pair.method.value}: applied {pair.bandpass.name} + {pair.gain.name}{age} in "
        f"{outcome.duration_s:.1f} s"
        + (
            f" (bandpass of {pair.bandpass_group} rebased on the gains' solve)"
            if pair.rebased
            else ""
        ),
    )
    return outcome


@dataclass(frozen=True)
class Recalibration:
    """A quick-look (or less well calibrated) group that a calibrator solution now covers."""

    group_id: str
    applied: str
    choice: GainChoice

    @property
    def run_key(self) -> str:
        return f"{self.group_id}:recalibrate:{self.choice.key}"


def groups_to_recalibrate(
    registry: Registry, policy: CalibrationPolicy, *, limit: int = 100
) -> list[Recalibration]:
    """Imaged groups whose calibration would now be better, oldest first.

    A group qualifies when it is ``uncalibrated`` or ``field-model`` and a calibrator solution
    now covers it, or ``nearest`` and it can now be interpolated (or has its own calibrator
    solve); only once its image stage
    is done and no stage of it is running (so a re-run never overlaps the first run).
    """
    rows = registry.query(
        "SELECT m.group_id, m.mid_mjd, m.cal_method FROM ms_index m"
        " JOIN stage_status i ON i.group_id = m.group_id AND i.stage = 'image'"
        " AND i.status = 'done'"
        " WHERE m.cal_method IN ('uncalibrated', 'field-model', 'nearest')"
        " AND NOT EXISTS (SELECT 1 FROM stage_status r WHERE r.group_id = m.group_id"
        " AND r.status = 'running')"
        " ORDER BY m.mid_mjd"
    )
    found: list[Recalibration] = []
    for group_id, mid_mjd, method in rows:
        choice, _ = choose_gains(
            registry, float(mid_mjd), window_h=policy.gain_window_h, group_id=group_id
        )
        if choice is None:
            continue
        if method == CalMethod.NEAREST.value and choice.method is CalMethod.NEAREST:
            continue
        found.append(Recalibration(group_id, method, choice))
        if len(found) >= limit:
            break
    return found
