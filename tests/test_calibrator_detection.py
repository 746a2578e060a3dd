"""Calibrators count by beam response, the best-placed bandpass wins, the field is named.

Two consecutive simulated groups (16 antennas, 2 subbands x 1 channel, corruptions on, no
noise): the first ends 80 s before 3C286 crosses the meridian (its crossing is outside the
group, its beam response at the group's end ~0.96), the second contains the crossing (~0.99).
Both are detected and solved; the first is calibrated with the second's bandpass (rebased onto
its own gains' solve) and its own gains. A third group an hour later sees no calibrator.
Real files, real conversion, real SQLite, real CASA tables.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from astropy.time import Time
from casacore import tables as pt
from helpers import tier_env

from dsa110_assets.calibration import (
    PointSourceModel,
    apply_calibration,
    read_caltable,
    read_ms_geometry,
)
from dsa110_assets.calibration.fields import FIELD_KEYWORD, name_calibrator_field
from dsa110_assets.catalogs.survey import ingest_survey
from dsa110_assets.conversion import convert_group
from dsa110_assets.naming import parse_subband_filename
from dsa110_assets.processing.apply_step import CalStatus, apply_and_register
from dsa110_assets.processing.cal_choice import find_calibration
from dsa110_assets.processing.calibrate_step import CalibrationPolicy, solve_and_register
from dsa110_assets.registry import LATEST_VERSION, Registry, get_stage, migrate
from dsa110_assets.registry.products import ms_record
from dsa110_assets.settings import Settings
from dsa110_assets.simulation import SimulationConfig, simulate_observations
from dsa110_assets.simulation.simulate import DEFAULT_DATE, FILE_DURATION_S, calibrator_transit
from dsa110_assets.simulation.sky import get_calibrator, read_catalog

BEFORE_TRANSIT_S = 80.0  # the first group ends this long before 3C286's meridian crossing
SIM = dict(
    n_antennas=16,
    n_channels=1,
    subbands=(4, 11),
    seed=5,
    n_background_sources=0,
    noise=False,
    corruptions=True,
    calibrator="3C286",
)
POLICY = CalibrationPolicy()


def _register(registry: Registry, result, group_id: str) -> None:
    """Write the queue and ms_index rows the conversion step would have written."""
    with registry.transaction():
        registry.execute(
            "INSERT INTO processing_queue(group_id, state, received_at, last_update,"
            " expected_subbands) VALUES (?, 'completed', 1, 1, 16)",
            (group_id,),
        )
        registry.execute(
            "INSERT INTO ms_index(path, group_id, start_mjd, end_mjd, mid_mjd, status, stage,"
            " field_name, pointing_ra_deg, pointing_dec_deg, created_at)"
            " VALUES (?, ?, ?, ?, ?, 'completed', 'converted', ?, ?, ?, 1)",
            (
                str(result.ms_path),
                group_id,
                result.start_mjd,
                result.end_mjd,
                result.mid_mjd,
                result.field_name,
                result.pointing_ra_deg,
                result.pointing_dec_deg,
            ),
        )


def _convert(sim, index: int, ms: Path, scratch: Path):
    files = {parse_subband_filename(p.name).subband: p for p in sim.groups[index].files}
    return convert_group(files, ms, tmpfs_dir=None, scratch_dir=scratch, durable=False)


def _field_table(ms: Path) -> tuple[list[str], np.ndarray]:
    with pt.table(f"{ms}::FIELD", ack=False) as t:
        return list(t.getcol("NAME")), t.getcol("PHASE_DIR")


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory):
    """Both groups converted, registered, detected and solved (the off-transit one first)."""
    root = tmp_path_factory.mktemp("detection")
    settings = Settings.from_env(tier_env(root), root=root).ensure_dirs()
    transit = calibrator_transit(get_calibrator("3C286"), DEFAULT_DATE)
    start = transit - timedelta(seconds=FILE_DURATION_S + BEFORE_TRANSIT_S)
    sim = simulate_observations(
        SimulationConfig(
            output_dir=root / "in", truth_dir=root / "truth", n_groups=2, start=start, **SIM
        )
    )
    ids = ["off-transit", "at-transit"]
    names_before = {}
    # the field's sky model comes from the survey catalogs: the simulated sky, loaded as NVSS
    ingest_survey("nvss", sim.nvss_catalog_path, settings.state_dir / "catalogs")
    registry = Registry(settings.db_path)
    for index, group_id in enumerate(ids):
        ms = settings.output_dir / f"{group_id}.ms"
        result = _convert(sim, index, ms, root / "scratch")
        names_before[group_id] = _field_table(ms)
        _register(registry, result, group_id)
    outcomes = {
        g: solve_and_register(settings, registry, ms_record(registry, g), POLICY) for g in ids
    }
    yield settings, registry, sim, Time(transit).mjd, names_before, outcomes
    registry.close()


def test_a_group_ending_before_the_transit_is_detected_and_solved(observed) -> None:
    settings, registry, _, transit_mjd, _, outcomes = observed
    record = ms_record(registry, "off-transit")
    (hit,) = outcomes["off-transit"].transits
    assert hit.name == "3C286" and not hit.in_window
    minutes_after_end = (hit.transit_mjd - record.end_mjd) * 1440
    assert 1.0 < minutes_after_end < 2.0, minutes_after_end
    assert abs(hit.transit_mjd - transit_mjd) * 86400 < 1.0
    assert hit.closest_mjd == pytest.approx(record.end_mjd, abs=1e-9)
    assert hit.beam_response > 0.9
    row = registry.execute(
        "SELECT has_calibrator, calibrators FROM processing_queue WHERE group_id = 'off-transit'"
    ).fetchone()
    listed = json.loads(row["calibrators"])
    assert row["has_calibrator"] == 1 and listed[0]["name"] == "3C286"
    assert listed[0]["in_window"] is False
    assert listed[0]["beam_response"] == pytest.approx(hit.beam_response, abs=1e-4)
    assert outcomes["off-transit"].calibrator == "3C286"
    assert all(p.is_dir() for p in outcomes["off-transit"].tables)
    stage = get_stage(registry, "off-transit", "calibrate")
    assert stage.status.value == "done" and "min from its transit" in stage.detail
    responses = dict(
        registry.query(
            "SELECT group_id || ':' || table_type, beam_response FROM calibration_tables"
        )
    )
    at = outcomes["at-transit"].transits[0]
    assert at.in_window and at.beam_response > hit.beam_response
    assert responses == pytest.approx(
        {
            "off-transit:bandpass": hit.beam_response,
            "off-transit:gain": hit.beam_response,
            "at-transit:bandpass": at.beam_response,
            "at-transit:gain": at.beam_response,
        }
    )


def test_the_calibrator_field_is_named_and_the_rest_kept(observed) -> None:
    settings, registry, _, _, names_before, outcomes = observed
    for group_id, expected_field in (("off-transit", -1), ("at-transit", None)):
        record = ms_record(registry, group_id)
        named = outcomes[group_id].calibrator_field
        names, dirs = _field_table(record.path)
        old_names, old_dirs = names_before[group_id]
        assert names[named.field_id] == "3C286" and named.original_name == old_names[named.field_id]
        assert [n for i, n in enumerate(names) if i != named.field_id] == [
            n for i, n in enumerate(old_names) if i != named.field_id
        ]
        assert np.array_equal(dirs, old_dirs)  # phase centres untouched
        if expected_field is not None:  # closest approach: the last integration
            assert named.field_id == len(names) - 1
        else:  # the crossing: the integration nearest the transit
            hit = outcomes[group_id].transits[0]
            with pt.table(f"{record.path}::FIELD", ack=False) as t:
                times = t.getcol("TIME") / 86400.0
            assert named.field_id == int(np.argmin(np.abs(times - hit.transit_mjd)))
        # the field centre is the meridian at the pointing declination at the integration's
        # centre: as far from the calibrator as detection's closest approach, give or take
        # half an integration of drift (6.4 s = 0.023 deg at this declination) and aberration
        hit = outcomes[group_id].transits[0]
        assert named.separation_deg == pytest.approx(hit.separation_deg, abs=0.03)
        print(group_id, f"field {named.field_id} {named.separation_deg:.3f} deg from 3C286")
        row = registry.execute(
            "SELECT calibrator_field, calibrator_field_id FROM ms_index WHERE group_id = ?",
            (group_id,),
        ).fetchone()
        assert (row[0], row[1]) == ("3C286", named.field_id)


def test_field_naming_is_idempotent_and_moves_cleanly(observed, tmp_path: Path) -> None:
    settings, registry, _, _, names_before, _ = observed
    ms = tmp_path / "copy.ms"
    import shutil

    shutil.copytree(ms_record(registry, "at-transit").path, ms)
    cal = get_calibrator("3C286")
    again = name_calibrator_field(ms, "3C286", cal.ra_deg, cal.dec_deg)
    assert not again.changed
    names, dirs = _field_table(ms)
    # a different position (the first field's centre) moves the name; the old one is restored
    first_ra, first_dec = np.degrees(dirs[0, 0])
    moved = name_calibrator_field(ms, "3C286", float(first_ra), float(first_dec))
    assert moved.field_id == 0 and moved.changed
    after, _ = _field_table(ms)
    assert after[0] == "3C286" and after.count("3C286") == 1
    assert after[again.field_id] == names_before["at-transit"][0][again.field_id]
    with pt.table(f"{ms}::FIELD", ack=False) as t:
        assert t.getkeyword(FIELD_KEYWORD)["field_id"] == 0


def _model_ratio_error(ms: Path, catalog: Path) -> float:
    """Median |CORRECTED_DATA / model - 1| over unflagged cross-correlations (the true sky)."""
    model = PointSourceModel(read_catalog(catalog), read_ms_geometry(ms))
    with pt.table(f"{ms}::SPECTRAL_WINDOW", ack=False) as t:
        freqs = t.getcol("CHAN_FREQ")
    with pt.table(f"{ms}::DATA_DESCRIPTION", ack=False) as t:
        spw_of = t.getcol("SPECTRAL_WINDOW_ID")
    errors = []
    with pt.table(str(ms), ack=False) as t:
        ddid = t.getcol("DATA_DESC_ID")
        for d in np.unique(ddid):
            sub = t.query(f"DATA_DESC_ID == {int(d)} && ANTENNA1 != ANTENNA2")
            flag = sub.getcol("FLAG")
            if flag.all():
                continue
            m = model.predict(
                sub.getcol("TIME"), sub.getcol("FIELD_ID"), sub.getcol("UVW"), freqs[spw_of[d]]
            )
            ratio = sub.getcol("CORRECTED_DATA") / m[:, :, None]
            errors.append(np.abs(ratio - 1)[~flag])
            sub.close()
    return float(np.median(np.concatenate(errors)))


def test_apply_takes_the_best_bandpass_and_the_nearest_gains(observed, tmp_path: Path) -> None:
    settings, registry, sim, _, _, outcomes = observed
    off_bp, off_gain = outcomes["off-transit"].tables
    at_bp, at_gain = outcomes["at-transit"].tables
    record = ms_record(registry, "off-transit")
    applied = apply_and_register(registry, record, POLICY)
    assert applied.status is CalStatus.APPLIED
    pair = applied.pair
    assert pair.gain == off_gain and pair.source_group == "off-transit"
    assert pair.bandpass_source == at_bp and pair.bandpass_group == "at-transit"
    assert pair.rebased and pair.bandpass.is_dir() and pair.bandpass != at_bp
    rebased_error = _model_ratio_error(record.path, sim.catalog_path)
    # the same tables mixed without rebasing: the bandpass carries the other scan's phases
    mixed = tmp_path / "mixed.ms"
    import shutil

    shutil.copytree(record.path, mixed)
    apply_calibration(mixed, at_bp, off_gain)
    mixed_error = _model_ratio_error(mixed, sim.catalog_path)
    print(f"median |corrected/model - 1|: rebased {rebased_error:.2e}, mixed {mixed_error:.2e}")
    # measured: rebased 1.9%, mixed 2.0%; the off-transit group's own pair gives 2.4%
    assert rebased_error < 0.03 and rebased_error <= 1.02 * mixed_error
    # the rebased table: the chosen bandpass's amplitudes, the gains' solve's mean phases
    shape, own_bp, rebased = (read_caltable(p) for p in (at_bp, off_bp, pair.bandpass))
    assert np.allclose(np.abs(rebased.cparam), np.abs(shape.cparam), rtol=1e-5)
    for ant in np.unique(rebased.antenna1):
        rows = rebased.antenna1 == ant
        ok = ~rebased.flag[rows] & ~own_bp.flag[rows]
        if ok.any():
            offset = np.angle(np.sum(own_bp.cparam[rows][ok] * np.conj(rebased.cparam[rows][ok])))
            assert abs(np.degrees(offset)) < 0.5, (ant, np.degrees(offset))
    ms_row = registry.execute(
        "SELECT bandpass_table, gain_table, cal_status FROM ms_index WHERE group_id = ?",
        ("off-transit",),
    ).fetchone()
    assert tuple(ms_row) == (str(pair.bandpass), str(off_gain), "applied")
    # the group holding the transit: its own tables, nothing rebased
    own = apply_and_register(registry, ms_record(registry, "at-transit"), POLICY).pair
    assert (own.bandpass, own.gain, own.rebased) == (at_bp, at_gain, False)
    assert _model_ratio_error(ms_record(registry, "at-transit").path, sim.catalog_path) < 0.03


def test_the_higher_response_bandpass_is_chosen_ties_go_to_the_nearest(observed) -> None:
    settings, registry, _, _, _, outcomes = observed
    off_bp = outcomes["off-transit"].tables[0]
    at_bp = outcomes["at-transit"].tables[0]
    mid = ms_record(registry, "off-transit").mid_mjd
    original = dict(
        registry.query(
            "SELECT path, beam_response FROM calibration_tables WHERE table_type = 'bandpass'"
        )
    )
    assert original[str(at_bp)] > original[str(off_bp)]
    pair, _ = find_calibration(registry, mid)
    assert pair.bandpass_source == at_bp
    try:
        with registry.transaction():  # the other way round: the off-transit one is better
            registry.execute(
                "UPDATE calibration_tables SET beam_response = 0.999 WHERE path = ?", (str(off_bp),)
            )
        pair, _ = find_calibration(registry, mid)
        assert pair.bandpass_source == off_bp and not pair.rebased
        with registry.transaction():  # a tie: the nearer in time (the group's own)
            registry.execute(
                "UPDATE calibration_tables SET beam_response = ? WHERE path = ?",
                (original[str(at_bp)], str(off_bp)),
            )
        assert find_calibration(registry, mid)[0].bandpass_source == off_bp
        at_mid = ms_record(registry, "at-transit").mid_mjd
        assert find_calibration(registry, at_mid)[0].bandpass_source == at_bp
    finally:
        with registry.transaction():
            registry.execute(
                "UPDATE calibration_tables SET beam_response = ? WHERE path = ?",
                (original[str(off_bp)], str(off_bp)),
            )


def test_a_group_far_from_any_calibrator_is_not_one(tmp_path: Path) -> None:
    settings = Settings.from_env(tier_env(tmp_path), root=tmp_path).ensure_dirs()
    transit = calibrator_transit(get_calibrator("3C286"), DEFAULT_DATE)
    sim = simulate_observations(
        SimulationConfig(
            output_dir=tmp_path / "in",
            truth_dir=tmp_path / "truth",
            start=transit + timedelta(hours=1),
            **{**SIM, "n_antennas": 4, "subbands": (0,), "corruptions": False},
        )
    )
    ms = settings.output_dir / "far.ms"
    result = _convert(sim, 0, ms, tmp_path / "scratch")
    names_before, _ = _field_table(ms)
    with Registry(settings.db_path) as registry:
        _register(registry, result, "far")
        outcome = solve_and_register(settings, registry, ms_record(registry, "far"), POLICY)
        assert outcome.transits == [] and outcome.calibrator is None
        assert outcome.calibrator_field is None
        row = registry.execute(
            "SELECT has_calibrator, calibrators FROM processing_queue WHERE group_id = 'far'"
        ).fetchone()
        assert (row[0], json.loads(row[1])) == (0, [])
        assert registry.query("SELECT * FROM calibration_tables") == []
        assert get_stage(registry, "far", "calibrate").status.value == "skipped"
    assert _field_table(ms)[0] == names_before


def test_migration_5_fills_the_response_of_older_tables(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, target=4) == [1, 2, 3, 4]
    listed = [{"name": "3C286", "beam_response": 0.9657}, {"name": "3C287", "beam_response": 0.4}]
    for gid, calibrators in (("g1", json.dumps(listed)), ("g2", "not json"), ("g3", None)):
        conn.execute(
            "INSERT INTO processing_queue(group_id, state, received_at, last_update, calibrators)"
            " VALUES (?, 'completed', 1, 1, ?)",
            (gid, calibrators),
        )
        conn.execute(
            "INSERT INTO calibration_tables(path, group_id, table_type, calibrator,"
            " valid_start_mjd, valid_end_mjd, created_at) VALUES (?, ?, 'bandpass', '3C286',"
            " 0, 1, 1)",
            (f"/{gid}.bcal", gid),
        )
    conn.close()
    with Registry(path) as registry:
        assert registry.schema_version == LATEST_VERSION
        filled = dict(registry.query("SELECT group_id, beam_response FROM calibration_tables"))
        assert filled == {"g1": 0.9657, "g2": None, "g3": None}
        columns = {r[1] for r in registry.query("PRAGMA table_info(ms_index)")}
        assert {"calibrator_field", "calibrator_field_id"} <= columns
