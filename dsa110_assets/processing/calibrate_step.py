"""Find the calibrators a group saw, solve on the brightest, and register the tables.

Detection runs on every group and fills ``processing_queue.has_calibrator`` and
``calibrators`` (JSON: name, transit MJD, whether the transit is inside the group, moment of
closest approach, separation, beam response, apparent flux). A calibrator counts when its
primary-beam response at its closest approach to the pointing during the group is at least
``min_beam_response``, whether or not its meridian crossing falls inside the group: 3C286 at
0.95 response a minute before its crossing is as good a calibrator as at its crossing. On a
calibrator group the FIELD of the closest integration is renamed to the calibrator's name (see
:mod:`dsa110_assets.calibration.fields`; recorded in ``ms_index.calibrator_field`` and
``calibrator_field_id``), and the bandpass and gains are solved against that calibrator and
written as CASA B and G Jones tables, ``{products}/caltables/{group_id}_{calibrator}.bcal`` /
``.gcal``, registered in ``calibration_tables`` with validity windows centred on the
observation (bandpass 24 h, gains 1 h by default) and the beam response they were solved at,
from which the apply step picks the best-placed bandpass. A failed solve writes no table and
fails the stage with the reason.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dsa110_assets.calibration import (
    CalibrationError,
    CalibrationSolution,
    solve_calibrator,
    write_bandpass_table,
    write_gain_table,
)
from dsa110_assets.calibration.fields import CalibratorField, name_calibrator_field
from dsa110_assets.calibration.model import (
    ModelGeometryError,
    read_ms_geometry,
    write_model_column,
)
from dsa110_assets.catalogs.base import SURVEYS, CatalogError
from dsa110_assets.catalogs.cone import angular_separation_deg, cone_search
from dsa110_assets.catalogs.transits import CalibratorTransit, calibrators_in_beam
from dsa110_assets.catalogs.vla import ensure_calibrator_db, load_calibrators
from dsa110_assets.instrument import airy_power_beam
from dsa110_assets.registry import Registry, StageOutcome, record_stage
from dsa110_assets.registry.caltables import register_caltables
from dsa110_assets.registry.products import (
    MSRecord,
    record_calibrator_field,
    record_calibrators,
)
from dsa110_assets.registry.stage_run import stage_run
from dsa110_assets.settings import Settings
from dsa110_assets.storage.products import caltable_paths
from dsa110_assets.timing import Stopwatch

STAGE = "calibrate"


@dataclass(frozen=True)
class CalibrationPolicy:
    """How calibration is done and how far in time its solutions reach.

    ``gain_window_h``: a calibrator's gain solution calibrates groups up to this many hours
    either side of it (interpolated between the solutions on either side, else the nearest).
    DSA-110 drifts the sky through a fixed beam, so each pointing sees a given calibrator once
    a day: +/-12 h lets one transit calibrate the whole day. ``field_model``: with no
    calibrator solution in the window, solve the group's gains against its catalog field
    (accepted when the median gain S/N is at least ``field_min_snr``). Nothing waits: a group
    without either is imaged at once, uncalibrated, and re-calibrated when a solution appears.
    """

    uv_min_klambda: float = 1.0
    bandpass_validity_h: float = 24.0
    gain_window_h: float = 12.0
    gain_solint_s: float | None = None  # None: the solver's default
    min_beam_response: float = 0.3  # a calibrator counts when the beam sees this much of it
    max_field_sources: int = 10  # brightest catalog sources added to the calibrator's model
    field_radius_deg: float = 2.5  # searched around the pointing (beam FWHM ~2.9 deg + drift)
    field_min_apparent_jy: float = 0.05
    field_model: bool = True
    field_min_snr: float = 10.0


@dataclass(frozen=True)
class FieldSource:
    """A catalog source in the calibrator's field, in the form the solver's model takes."""

    name: str
    ra_deg: float
    dec_deg: float
    flux_1400_jy: float
    spectral_index: float = -0.7  # survey catalogs have one frequency: a typical index


@dataclass
class CalibrationOutcome:
    """What the calibrate stage found and solved on one group (for the asset's metadata)."""

    transits: list[CalibratorTransit]
    calibrator: str | None = None
    tables: list[Path] = field(default_factory=list)
    refant: str | None = None
    solve_s: float = 0.0
    write_s: float = 0.0
    details: dict[str, object] = field(default_factory=dict)
    field_sources: list[FieldSource] = field(default_factory=list)
    calibrator_field: CalibratorField | None = None


def pointing_dec_of_date(record: MSRecord) -> float:
    """Return the declination the dishes point at (of date, degrees): the fringe-stop keyword.

    Why not ``record.pointing_dec_deg``: that is the ICRS declination of the central field,
    which precession since J2000 moves from the Earth-fixed pointing by ~0.1 deg (2026), and
    the beam response is computed in the apparent frame (:mod:`dsa110_assets.catalogs.transits`);
    the ICRS value would bias every response (0.40 instead of 0.34 deg from 3C286's field 80 s
    before its crossing). Falls back to the ICRS value for an MS without the keyword.
    """
    try:
        return math.degrees(read_ms_geometry(record.path).dec0_rad)
    except ModelGeometryError:
        return float(record.pointing_dec_deg)


def detect_calibrators(
    settings: Settings, registry: Registry, record: MSRecord, policy: CalibrationPolicy
) -> list[CalibratorTransit]:
    """Return the calibrators the beam sees during the group, brightest first, recorded.

    A calibrator counts when the Airy power beam at its closest approach to the pointing within
    ``[start, end]`` of the group reaches ``policy.min_beam_response``: the sky drifts through a
    fixed beam, so what matters is how much of the calibrator the group saw, not whether its
    meridian crossing fell inside the group's five minutes.
    """
    calibrators = load_calibrators(ensure_calibrator_db(settings.catalogs_dir))
    transits = calibrators_in_beam(
        record.start_mjd,
        record.end_mjd,
        pointing_dec_of_date(record),
        calibrators,
        min_response=policy.min_beam_response,
    )
    listed = [
        {
            "name": t.name,
            "transit_mjd": round(t.transit_mjd, 7),
            "in_window": t.in_window,
            "closest_mjd": round(t.closest_mjd, 7),
            "separation_deg": round(t.separation_deg, 4),
            "beam_response": round(t.beam_response, 4),
            "apparent_flux_jy": round(t.apparent_flux_jy, 3),
        }
        for t in transits
    ]
    record_calibrators(registry, record.group_id, listed)
    return transits


def field_sources(
    settings: Settings, record: MSRecord, calibrator: object | None, policy: CalibrationPolicy
) -> list[FieldSource]:
    """Return the brightest (beam-weighted) catalog sources around the pointing.

    The calibrator (if any) is left out; sources come from the first ingested survey of
    NVSS, FIRST, VLASS (none: empty), brightest first.
    """
    catalogs_dir = settings.catalogs_dir
    for survey in SURVEYS:
        try:
            found = cone_search(
                catalogs_dir,
                survey,
                record.pointing_ra_deg,
                record.pointing_dec_deg,
                policy.field_radius_deg,
                min_flux_jy=policy.field_min_apparent_jy,
            )
        except CatalogError:
            continue
        ranked = []
        for src in found:
            if calibrator is not None and (
                angular_separation_deg(
                    src.ra_deg, src.dec_deg, float(calibrator.ra_deg), float(calibrator.dec_deg)
                )
                < 1.0 / 60
            ):
                continue  # the calibrator itself
            response = float(airy_power_beam(np.radians(src.separation_deg), np.array([1.4e9]))[0])
            apparent = src.flux_jy * response
            if apparent >= policy.field_min_apparent_jy:
                ranked.append((apparent, src))
        ranked.sort(key=lambda item: -item[0])
        return [
            FieldSource(f"{survey}:{s.source_id}", s.ra_deg, s.dec_deg, s.flux_jy)
            for _, s in ranked[: policy.max_field_sources]
        ]
    return []


def _solver_options(policy: CalibrationPolicy) -> dict[str, object]:
    """Return the solver's keyword arguments that ``policy`` sets."""
    kwargs: dict[str, object] = {"uv_min_klambda": policy.uv_min_klambda}
    if policy.gain_solint_s is not None:
        kwargs["gain_solint_s"] = policy.gain_solint_s
    return kwargs


def _write_solution(
    solution: CalibrationSolution, ms_path: Path, tables: tuple[Path, Path]
) -> None:
    """Write ``solution`` as the (bandpass, gain) CASA tables ``tables``."""
    bandpass_path, gain_path = tables
    bandpass_path.parent.mkdir(parents=True, exist_ok=True)
    write_bandpass_table(bandpass_path, solution, ms_path, overwrite=True)
    write_gain_table(gain_path, solution, ms_path, overwrite=True)


def _register_solve(
    registry: Registry,
    record: MSRecord,
    tables: tuple[Path, Path],
    policy: CalibrationPolicy,
    **labels: object,
) -> None:
    """Register a solve's (bandpass, gain) tables with the policy's validity windows."""
    bandpass_path, gain_path = tables
    register_tables(
        registry,
        record,
        [
            (bandpass_path, "bandpass", policy.bandpass_validity_h, None),
            (gain_path, "gain", 2.0 * policy.gain_window_h, policy.gain_solint_s),
        ],
        **labels,
    )


def _solve_on(
    settings: Settings,
    record: MSRecord,
    source: object,
    tables: tuple[Path, Path],
    policy: CalibrationPolicy,
    outcome: CalibrationOutcome,
) -> CalibrationSolution:
    """Solve on the calibrator ``source`` and write its tables and MODEL_DATA, timed."""
    watch = Stopwatch()
    outcome.field_sources = field_sources(settings, record, source, policy)
    solution = solve_calibrator(
        record.path, source, field_sources=outcome.field_sources, **_solver_options(policy)
    )
    outcome.solve_s = watch.restart()
    _write_solution(solution, record.path, tables)
    # MODEL_DATA = the sky solved against, so CASA's gaincal/bandpass on this MS agree.
    write_model_column(record.path, [source, *outcome.field_sources])
    outcome.write_s = watch.elapsed_s
    return solution


def _solved_detail(best: CalibratorTransit, refant: str | None, solve_s: float) -> str:
    """Return the done message of a calibrator solve: where it was solved, and how fast."""
    minutes = abs(best.transit_mjd - best.closest_mjd) * 1440
    where = "at its transit" if best.in_window else f"{minutes:.1f} min from its transit"
    return (
        f"solved on {best.name} (beam response {best.beam_response:.3f} {where}; refant "
        f"{refant}) in {solve_s:.1f} s"
    )


def solve_and_register(
    settings: Settings, registry: Registry, record: MSRecord, policy: CalibrationPolicy
) -> CalibrationOutcome:
    """Detect calibrators; on a calibrator group solve, write and register B and G tables.

    Raises whatever the solver raised (after recording the stage as failed); no table is
    written or registered then.
    """
    transits = detect_calibrators(settings, registry, record, policy)
    outcome = CalibrationOutcome(transits=transits)
    if not transits:
        record_stage(
            registry, record.group_id, STAGE, StageOutcome.SKIPPED, "no calibrator in the beam"
        )
        return outcome
    best = transits[0]
    calibrators = {c.name: c for c in load_calibrators(ensure_calibrator_db(settings.catalogs_dir))}
    source = calibrators[best.name]
    outcome.calibrator_field = name_field(registry, record, best)
    tables = caltable_paths(settings, record.group_id, best.name)
    with stage_run(registry, record.group_id, STAGE, f"solving on {best.name}") as run:
        solution = _solve_on(settings, record, source, tables, policy, outcome)
        outcome.calibrator = best.name
        outcome.tables = list(tables)
        outcome.refant = solution.antenna_names[solution.refant]
        outcome.details = solution_summary(solution)
        outcome.details["beam_response"] = round(best.beam_response, 4)
        outcome.details["calibrator_field"] = outcome.calibrator_field.name
        outcome.details["calibrator_field_id"] = outcome.calibrator_field.field_id
        _register_solve(
            registry,
            record,
            tables,
            policy,
            calibrator=best.name,
            refant=outcome.refant,
            details=outcome.details,
            beam_response=best.beam_response,
            solved_against="calibrator",
        )
        run.done(_solved_detail(best, outcome.refant, outcome.solve_s))
    return outcome


def register_tables(
    registry: Registry,
    record: MSRecord,
    rows: list[tuple[Path, str, float, float | None]],
    *,
    calibrator: str,
    refant: str | None,
    details: dict[str, object],
    beam_response: float | None,
    solved_against: str,
) -> None:
    """Upsert ``(path, table_type, validity_h, solint_s)`` rows in ``calibration_tables``.

    The validity window is centred on the group's mid-time. A re-solve updates its row (same
    path), so a table is never registered twice.
    """
    now = time.time()
    register_caltables(
        registry,
        [
            {
                "path": str(path),
                "group_id": record.group_id,
                "table_type": table_type,
                "calibrator": calibrator,
                "refant": refant,
                "valid_start_mjd": record.mid_mjd - validity_h / 48.0,  # hours -> days, halved
                "valid_end_mjd": record.mid_mjd + validity_h / 48.0,
                "solution_interval_s": solint
                if solint is not None
                else details.get("gain_solint_s"),
                "n_antennas": details.get("n_antennas"),
                "flagged_fraction": details.get(f"{table_type}_flagged_fraction"),
                "beam_response": beam_response,
                "created_at": now,
                "solved_against": solved_against,
            }
            for path, table_type, validity_h, solint in rows
        ],
    )


FIELD_MODEL = "field-model"


@dataclass
class FieldSolveOutcome:
    """A gain solve against a group's catalog field, accepted or refused (``reason``)."""

    tables: tuple[Path, Path] | None
    sources: list[FieldSource]
    median_snr: float = 0.0
    n_antennas: int = 0
    solve_s: float = 0.0
    reason: str | None = None


def _field_solution(
    record: MSRecord, policy: CalibrationPolicy, outcome: FieldSolveOutcome
) -> CalibrationSolution | None:
    """Solve against ``outcome.sources``; None (with ``outcome.reason``) when refused."""
    watch = Stopwatch()
    sources = outcome.sources
    try:
        solution = solve_calibrator(
            record.path, sources[0], field_sources=sources[1:], **_solver_options(policy)
        )
    except CalibrationError as exc:
        outcome.reason = f"field-model solve failed: {exc}"
        return None
    outcome.solve_s = watch.elapsed_s
    solved = ~solution.gain_flag
    outcome.n_antennas = int(solved.any(axis=(0, 2)).sum())
    outcome.median_snr = float(np.median(solution.gain_snr[solved])) if solved.any() else 0.0
    if outcome.median_snr < policy.field_min_snr:
        outcome.reason = (
            f"field-model gains too noisy: median S/N {outcome.median_snr:.1f} < "
            f"{policy.field_min_snr:g}"
        )
        return None
    return solution


def solve_field_model(
    settings: Settings, registry: Registry, record: MSRecord, policy: CalibrationPolicy
) -> FieldSolveOutcome:
    """Solve ``record``'s bandpass and gains against its catalog field (no calibrator).

    Why it works: every DSA-110 pointing has survey sources in its 3 deg beam, and the solver
    models them as it models a calibrator's field (beam-weighted points, spectral index
    -0.7). The solution is accepted only when the median gain S/N over solved antennas is at
    least ``policy.field_min_snr`` and the solver solved enough antennas; otherwise nothing
    is written or registered and the group stays a quick look. An accepted solution is
    registered with ``solved_against = 'field-model'``: it describes this group's sky, so no
    other group is ever calibrated with it.
    """
    sources = field_sources(settings, record, None, policy)
    outcome = FieldSolveOutcome(tables=None, sources=sources)
    if not sources:
        outcome.reason = "no catalog source in the beam"
        return outcome
    solution = _field_solution(record, policy, outcome)
    if solution is None:
        return outcome
    tables = caltable_paths(settings, record.group_id, FIELD_MODEL)
    _write_solution(solution, record.path, tables)
    _register_solve(
        registry,
        record,
        tables,
        policy,
        calibrator=FIELD_MODEL,
        refant=solution.antenna_names[solution.refant],
        details=solution_summary(solution),
        beam_response=None,
        solved_against=FIELD_MODEL,
    )
    outcome.tables = tables
    return outcome


def name_field(registry: Registry, record: MSRecord, best: CalibratorTransit) -> CalibratorField:
    """Name the FIELD of ``best``'s closest approach after it, in the MS and in ``ms_index``.

    So CASA tasks that select the calibrator by name (``setjy(field='3C286')``) find it; see
    :func:`dsa110_assets.calibration.fields.name_calibrator_field`. Idempotent.
    """
    named = name_calibrator_field(record.path, best.name, best.ra_deg, best.dec_deg)
    record_calibrator_field(registry, record.path, named.name, named.field_id)
    return named


def solution_summary(solution: CalibrationSolution) -> dict[str, object]:
    """Return the numbers worth showing about a solution, for the registry and the UI."""
    stats = solution.stats
    return {
        "n_antennas": int(stats.get("n_antennas_solved", 0)),
        "bandpass_flagged_fraction": round(float(stats.get("bandpass_flagged_fraction", 0)), 4),
        "gain_flagged_fraction": round(float(stats.get("gain_flagged_fraction", 0)), 4),
        "gain_solint_s": float(solution.gain_solint_s),
        "gain_intervals": int(len(solution.gain_time_s)),
        "iterations": int(stats.get("iterations", 0)),
        "uv_min_klambda": float(solution.uv_min_klambda),
        "peak_beam_response": round(float(solution.peak_beam), 4),
    }
