"""Test calibration: model, StEFCal, solves, CASA tables, apply and failure modes.

Calibration: model convention, StEFCal, bandpass/gain solve vs the simulator's truth, CASA
tables, apply, and the failure modes.

Two small simulated groups, each converted once per module:

* ``clean``: 16 antennas, 16 x 4 channels, 3C286 alone, no noise, no corruptions: the model
  must reproduce DATA (the MS sign convention, beam and geometry).
* ``cal``: 64 antennas, 16 x 2 channels (subband 9 missing), 3C286 at transit, noise and
  corruptions on. Why these numbers: the bandpass error per channel is about
  ``SEFD / (S sqrt(2 dnu t N_int N_long))`` with ``N_long`` the antenna's baselines beyond
  1 klambda (as few as 11 for some core antennas of a 48-antenna array). The solutions are
  noise-limited (errors / predicted errors have std ~1.1), so the worst of ~8000 must be a
  4-5 sigma event below 1%: measured worst 0.63% / 0.51 deg here, whereas 48 antennas x 8
  channels per subband reach 1.9% / 1.4 deg and 48 x 2 reach 1.09%.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
from casacore import tables as pt

from dsa110_assets.calibration import (
    CalibrationError,
    CalTableError,
    PointSourceModel,
    apply_calibration,
    read_caltable,
    read_ms_geometry,
    solve_calibrator,
    stefcal,
    write_bandpass_table,
    write_gain_table,
)
from dsa110_assets.calibration.apply import CalTableMismatchError, interpolate_gains
from dsa110_assets.calibration.caltable import MAIN_COLUMNS
from dsa110_assets.calibration.model import source_flux
from dsa110_assets.calibration.solve import solution_intervals
from dsa110_assets.conversion import convert_group
from dsa110_assets.naming import parse_subband_filename
from dsa110_assets.simulation import SimulationConfig, simulate_observations
from dsa110_assets.simulation.sky import PointSource, get_calibrator, read_catalog

MISSING_SUBBAND = 9
CAL_ANTENNAS = 64
CLEAN = dict(
    n_antennas=16, n_channels=4, seed=1, n_background_sources=0, noise=False, corruptions=False
)
CAL = dict(
    n_antennas=CAL_ANTENNAS,
    n_channels=2,
    seed=3,
    n_background_sources=0,
    noise=True,
    corruptions=True,
    subbands=tuple(sb for sb in range(16) if sb != MISSING_SUBBAND),
)
MJD_JD = 2400000.5


def _simulate_and_convert(root: Path, tag: str, **cfg) -> tuple[Path, Path]:
    sim = simulate_observations(
        SimulationConfig(output_dir=root / tag / "in", truth_dir=root / tag / "truth", **cfg)
    )
    files = {parse_subband_filename(p.name).subband: p for p in sim.groups[0].files}
    ms = root / tag / "group.ms"
    convert_group(files, ms, tmpfs_dir=None, scratch_dir=root / tag / "scratch", durable=False)
    return ms, sim.truth_path


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("calibration")


@pytest.fixture(scope="module")
def calibrator() -> PointSource:
    return get_calibrator("3C286")


@pytest.fixture(scope="module")
def clean(root: Path) -> tuple[Path, Path]:
    return _simulate_and_convert(root, "clean", **CLEAN)


@pytest.fixture(scope="module")
def clean_ms(clean) -> Path:
    return clean[0]


def _field_sources(truth_path: Path) -> list[PointSource]:
    """Return the simulated sky besides 3C286 (the field pattern in all four quadrants)."""
    return [s for s in read_catalog(truth_path.parent / "sky_catalog.csv") if s.name != "3C286"]


@pytest.fixture(scope="module")
def cal(root: Path):
    return _simulate_and_convert(root, "cal", **CAL)


@pytest.fixture(scope="module")
def solution(cal, calibrator):
    return solve_calibrator(cal[0], calibrator, field_sources=_field_sources(cal[1]))


@pytest.fixture(scope="module")
def tables(solution, cal, root: Path) -> tuple[Path, Path]:
    out = root / "caltables"
    bp = write_bandpass_table(out / "cal.B", solution, cal[0])
    g = write_gain_table(out / "cal.G", solution, cal[0])
    return bp, g


@pytest.fixture(scope="module")
def applied(tables, cal):
    return apply_calibration(cal[0], *tables)


def _copy_ms(ms: Path, dest: Path) -> Path:
    shutil.copytree(ms, dest)
    return dest


def _column(path: Path, column: str, sub: str | None = None) -> np.ndarray:
    with pt.table(str(path) + (f"/{sub}" if sub else ""), ack=False) as t:
        return t.getcol(column)


# -- model -------------------------------------------------------------------------------------


def test_model_reproduces_noise_free_data(clean, calibrator: PointSource) -> None:
    """Check the model against DATA: sign convention, UVW frame, field centres and beam.

    The MS sign convention, UVW frame, field centres and beam, checked numerically, on 3C286
    and eight sources in all four quadrants up to 1.25 deg out (a mirror cannot hide).
    """
    clean_ms, truth = clean
    sky = [calibrator, *_field_sources(truth)]
    assert len(sky) == 9
    model = PointSourceModel(sky, read_ms_geometry(clean_ms))
    freqs = _column(clean_ms, "CHAN_FREQ", "SPECTRAL_WINDOW")
    with pt.table(str(clean_ms), ack=False) as t:
        per_spw = t.nrows() // 16
        worst = 0.0
        for spw in (0, 8, 15):
            start = spw * per_spw
            data = t.getcol("DATA", start, per_spw)
            cross = t.getcol("ANTENNA1", start, per_spw) != t.getcol("ANTENNA2", start, per_spw)
            m = model.predict(
                t.getcol("TIME", start, per_spw),
                t.getcol("FIELD_ID", start, per_spw),
                t.getcol("UVW", start, per_spw),
                freqs[spw],
            )
            ratio = data[cross] / m[cross][:, :, None]
            worst = max(worst, float(np.abs(ratio - 1).max()))
            # the conjugate convention would be badly wrong on the long baselines
            wrong = data[cross] / np.conj(m[cross])[:, :, None]
            assert np.abs(wrong - 1).max() > 0.5
    assert worst < 1e-4
    # the beam is in it: the apparent flux is below the catalog flux off the beam centre
    times = np.unique(_column(clean_ms, "TIME"))
    apparent = model.apparent_flux(times, freqs[8])[0]
    assert apparent.max() <= source_flux(calibrator, freqs[8]).max()
    assert apparent[0].mean() < 0.95 * apparent[times.size // 2].mean()


# -- StEFCal -----------------------------------------------------------------------------------


def test_stefcal_recovers_gains_of_many_problems_and_flags_isolated_antennas() -> None:
    rng = np.random.default_rng(7)
    p, n = 6, 12
    g = rng.uniform(0.5, 1.5, (p, n)) * np.exp(1j * rng.uniform(-np.pi, np.pi, (p, n)))
    model = rng.uniform(1, 3, (p, n, n)) * np.exp(1j * rng.uniform(-1, 1, (p, n, n)))
    vis = g[:, :, None] * np.conj(g[:, None, :]) * model
    weight = np.ones((p, n, n))
    weight[0, 3, :] = weight[0, :, 3] = 0.0  # antenna 3 of problem 0 fully flagged
    weight[1, 5, :] = weight[1, :, 5] = 0.0
    weight[1, 5, 6] = 1.0  # one baseline left: below min_baselines
    result = stefcal(vis, weight, model, min_baselines=3, tol=1e-12)
    assert result.converged.all()
    assert not result.solved[0, 3] and not result.solved[1, 5]
    assert result.solved.sum() == p * n - 2
    for k in range(p):
        ok = result.solved[k]
        ref = np.flatnonzero(ok)[0]
        aligned = result.gains[k] * np.conj(result.gains[k, ref]) / abs(result.gains[k, ref])
        truth = g[k] * np.conj(g[k, ref]) / abs(g[k, ref])
        np.testing.assert_allclose(aligned[ok], truth[ok], rtol=1e-8, atol=1e-10)
    assert (result.gains[~result.solved] == 0).all()


def test_solution_intervals_are_equal_groups() -> None:
    times = np.arange(24) * 12.884902
    assert solution_intervals(times, 60.0, 12.884902).max() == 4
    assert np.bincount(solution_intervals(times, 60.0, 12.884902)).min() >= 4
    np.testing.assert_array_equal(solution_intervals(times, 1.0, 12.884902), np.arange(24))
    assert (solution_intervals(times, np.inf, 12.884902) == 0).all()


# -- solve vs truth ----------------------------------------------------------------------------


def test_solved_gains_match_the_truth(solution, cal) -> None:
    """g(t) * B(nu) at every data antenna, channel and integration: 1% and 1 degree."""
    ms, truth_path = cal
    with h5py.File(truth_path) as f:
        g_true, b_true = f["gains"][()], f["bandpass"][()]
        names = [n.decode() for n in f["antenna_names"][()]]
        freqs_true, times_jd = f["freqs_hz"][()], f["times_jd"][()]
    assert solution.refant_name in names
    assert int(solution.refant_name.removeprefix("DSA-")) < 103  # a core antenna
    idx = [solution.antenna_names.index(n) for n in names]
    ref = names.index(solution.refant_name)
    times_s = (times_jd - MJD_JD) * 86400.0
    g_sol = interpolate_gains(
        solution.gain_time_s, solution.gains.astype(complex), ~solution.gain_flag, times_s
    )
    assert not solution.gain_flag[:, idx].any()
    amp_err, phase_err, n_checked = [], [], 0
    for spw in range(16):
        flagged = solution.bandpass_flag[spw][idx]
        if spw == 15 - MISSING_SUBBAND:
            assert flagged.all()  # the missing subband's window
            continue
        assert not flagged.any()
        chan = [int(np.argmin(np.abs(freqs_true - f))) for f in solution.chan_freq_hz[spw]]
        for k in range(times_s.size):
            ours = g_sol[k, idx][:, None, :] * solution.bandpass[spw][idx]
            true = g_true[k][:, None, :] * b_true[:, chan, :]
            true = true * np.conj(true[ref]) / np.abs(true[ref])
            amp_err.append(np.abs(np.abs(ours) / np.abs(true) - 1).ravel())
            phase_err.append(np.degrees(np.abs(np.angle(ours / true))).ravel())
            n_checked += ours.size
    amp_err, phase_err = np.concatenate(amp_err), np.concatenate(phase_err)
    assert n_checked == 15 * 2 * 24 * CAL_ANTENNAS * 2
    assert amp_err.max() < 0.01, amp_err.max()
    assert phase_err.max() < 1.0, phase_err.max()
    assert np.sqrt(np.mean(amp_err**2)) < 0.004  # and they are not all near the limit


def test_solution_conventions(solution) -> None:
    ref = solution.refant
    ok_b = ~solution.bandpass_flag
    # refant phase is exactly zero in both tables, where it is unflagged
    assert np.abs(np.angle(solution.bandpass[:, ref][ok_b[:, ref]])).max() < 1e-6
    assert np.abs(np.angle(solution.gains[:, ref][~solution.gain_flag[:, ref]])).max() < 1e-6
    # mean bandpass amplitude over unflagged channels is 1 per antenna and polarization
    for a in np.flatnonzero(ok_b.any(axis=(0, 2, 3))):
        for p in range(2):
            amp = np.abs(solution.bandpass[:, a, :, p])[ok_b[:, a, :, p]]
            assert amp.mean() == pytest.approx(1.0, abs=1e-5)
    # antennas without data are flagged (117 stations, 64 with data)
    assert solution.bandpass.shape[1] == 117
    assert (~solution.gain_flag).any(axis=(0, 2)).sum() == CAL_ANTENNAS
    assert solution.gains.shape[0] == 5  # 24 integrations in 60 s intervals
    assert np.median(solution.bandpass_snr[ok_b]) > 100


# -- tables ------------------------------------------------------------------------------------


def test_tables_are_casa_calibration_tables(tables, solution, cal) -> None:
    bp_path, g_path = tables
    for path, viscal, n_chan in ((bp_path, "B Jones", 2), (g_path, "G Jones", 1)):
        with pt.table(str(path), ack=False) as t:
            assert t.info()["type"] == "Calibration"
            assert t.info()["subType"] == viscal
            kw = t.getkeywords()
            assert kw["VisCal"] == viscal and kw["ParType"] == "Complex"
            assert kw["PolBasis"] == "unknown" and kw["MSName"] == cal[0].name
            assert "CASA_Version" in kw
            assert set(MAIN_COLUMNS) <= set(t.colnames())
            assert t.getcell("CPARAM", 0).shape == (n_chan, 2)
            assert t.getcolkeyword("TIME", "MEASINFO")["Ref"] == "UTC"
            assert list(t.getcolkeyword("INTERVAL", "QuantumUnits")) == ["s"]
            assert (t.getcol("ANTENNA2") == solution.refant).all()
            for sub in ("ANTENNA", "FIELD", "SPECTRAL_WINDOW", "OBSERVATION", "HISTORY"):
                # the subtable keyword resolves after the rename into place
                with pt.table(t.getkeyword(sub), ack=False) as s:
                    assert s.nrows() > 0
        query = subprocess.run(
            ["taql", f"select gcount() as n from {path} where not all(FLAG)"],
            capture_output=True,
            text=True,
        )
        assert query.returncode == 0, query.stderr
    assert _column(bp_path, "NUM_CHAN", "SPECTRAL_WINDOW").tolist() == [2] * 16
    assert _column(g_path, "NUM_CHAN", "SPECTRAL_WINDOW").tolist() == [1] * 16
    bp = read_caltable(bp_path, "B Jones")
    assert bp.cparam.shape == (16 * 117, 2, 2)
    np.testing.assert_allclose(
        bp.cparam.reshape(16, 117, 2, 2), solution.bandpass, rtol=0, atol=1e-7
    )
    g = read_caltable(g_path, "G Jones")
    assert g.cparam.shape == (16 * 5 * 117, 1, 2)
    with pytest.raises(FileExistsError):
        write_bandpass_table(bp_path, solution, cal[0])


def test_write_is_atomic_and_overwrite_replaces(solution, cal, tmp_path: Path) -> None:
    path = write_gain_table(tmp_path / "a.G", solution, cal[0])
    assert write_gain_table(path, solution, cal[0], overwrite=True) == path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.G"]  # no hidden leftovers
    read_caltable(path, "G Jones")


# -- apply -------------------------------------------------------------------------------------


def test_calibrated_flux_matches_the_catalog(applied, cal, calibrator) -> None:
    """Weighted mean of CORRECTED_DATA / beam-only model on baselines > 1 klambda: 2%."""
    ms = cal[0]
    unit = PointSource("unit", calibrator.ra_deg, calibrator.dec_deg, 1.0, 0.0)
    model = PointSourceModel([unit], read_ms_geometry(ms))
    freqs = _column(ms, "CHAN_FREQ", "SPECTRAL_WINDOW")
    num = den = 0.0
    with pt.table(str(ms), ack=False) as t:
        n_rows = t.nrows()
        per_spw = n_rows // 16
        for spw in range(16):
            start = spw * per_spw
            flag = t.getcol("FLAG", start, per_spw)
            if flag.all():
                continue
            uvw = t.getcol("UVW", start, per_spw)
            m = model.predict(
                t.getcol("TIME", start, per_spw),
                t.getcol("FIELD_ID", start, per_spw),
                uvw,
                freqs[spw],
            )
            corr = t.getcol("CORRECTED_DATA", start, per_spw)
            weight = t.getcol("WEIGHT", start, per_spw)
            long = np.hypot(uvw[:, 0], uvw[:, 1])[:, None] * freqs[spw] / 2.998e8 > 1000
            scale = calibrator.flux_1400_jy / source_flux(calibrator, freqs[spw])  # to 1.4 GHz
            w = weight[:, None, :] * np.abs(m[:, :, None]) ** 2 * (~flag & long[:, :, None])
            num += np.sum(w * (corr / m[:, :, None]).real * scale[None, :, None])
            den += np.sum(w)
    assert num / den == pytest.approx(calibrator.flux_1400_jy, rel=0.02)
    assert applied.n_spw == 16 and applied.n_rows == n_rows
    assert 1 / 16 <= applied.flagged_fraction < 1 / 16 + 0.01  # the missing window
    assert applied.duration_s > 0


def test_apply_is_idempotent(applied, tables, cal) -> None:
    ms = cal[0]
    before = _column(ms, "CORRECTED_DATA"), _column(ms, "WEIGHT"), _column(ms, "FLAG")
    apply_calibration(ms, *tables)
    after = _column(ms, "CORRECTED_DATA"), _column(ms, "WEIGHT"), _column(ms, "FLAG")
    for x, y in zip(before, after, strict=True):
        np.testing.assert_array_equal(x, y)
    # weights follow the gains: |G_a G_b|^2 / SIGMA^2 (gain amplitudes ~1 +/- 10%)
    sigma = _column(ms, "SIGMA")
    ok = after[1] > 0
    ratio = after[1][ok] * sigma[ok] ** 2
    assert ratio.min() > 0.5 and ratio.max() < 2.0 and not np.allclose(ratio, 1.0)


def test_corrupt_tables_are_refused_and_the_ms_is_untouched(
    applied, tables, cal, tmp_path: Path
) -> None:
    ms, (bp_path, g_path) = cal[0], tables
    before = _column(ms, "CORRECTED_DATA")
    # a deleted column file
    broken = tmp_path / "broken.B"
    shutil.copytree(bp_path, broken)
    for f in broken.glob("table.f0*"):
        f.unlink()
    with pytest.raises(CalTableError):
        apply_calibration(ms, broken, g_path)
    # a wrong VisCal: a G table given as bandpass
    wrong = tmp_path / "wrong.B"
    shutil.copytree(g_path, wrong)
    with pytest.raises(CalTableError, match="VisCal"):
        apply_calibration(ms, wrong, g_path)
    # tampered VisCal keyword
    with pt.table(str(wrong), readonly=False, ack=False) as t:
        t.putkeyword("VisCal", "K Jones")
    with pytest.raises(CalTableError, match="VisCal"):
        read_caltable(wrong)
    with pytest.raises(CalTableError, match="no such"):
        apply_calibration(ms, tmp_path / "missing.B", g_path)
    np.testing.assert_array_equal(_column(ms, "CORRECTED_DATA"), before)


def test_tables_of_another_spectral_setup_are_refused(tables, clean_ms, root: Path) -> None:
    ms = _copy_ms(clean_ms, root / "clean-copy.ms")  # 4 channels per window, not 2
    before = _column(ms, "CORRECTED_DATA")
    with pytest.raises(CalTableMismatchError, match="channel frequencies"):
        apply_calibration(ms, *tables)
    np.testing.assert_array_equal(_column(ms, "CORRECTED_DATA"), before)


# -- failures ----------------------------------------------------------------------------------


def test_all_flagged_data_raise_and_write_nothing(clean_ms, calibrator, root: Path) -> None:
    ms = _copy_ms(clean_ms, root / "flagged.ms")
    with pt.table(str(ms), readonly=False, ack=False) as t:
        t.putcol("FLAG", np.ones(t.getcol("FLAG").shape, dtype=bool))
    out = root / "flagged-tables"
    with pytest.raises(CalibrationError, match="flagged"):
        solution = solve_calibrator(ms, calibrator)
        write_bandpass_table(out / "cal.B", solution, ms)
    assert not out.exists()


def test_calibrator_outside_the_beam_raises(clean_ms, calibrator) -> None:
    far = PointSource("far", calibrator.ra_deg, calibrator.dec_deg + 12.0, 15.0, -0.5)
    with pytest.raises(CalibrationError, match="not in the primary beam"):
        solve_calibrator(clean_ms, far)


def test_too_few_antennas_raise(clean_ms, calibrator) -> None:
    with pytest.raises(CalibrationError, match="antennas"):
        solve_calibrator(clean_ms, calibrator, min_antennas=17)


def test_given_reference_antenna_is_used_or_refused(clean, calibrator) -> None:
    clean_ms, truth = clean
    names = list(_column(clean_ms, "NAME", "ANTENNA"))
    used = np.unique(_column(clean_ms, "ANTENNA1"))
    chosen = names[int(used[3])]
    sol = solve_calibrator(clean_ms, calibrator, refant=chosen, field_sources=_field_sources(truth))
    assert sol.refant_name == chosen
    # noise-free, corruption-free data: unit gains everywhere (to the model's precision)
    ok = ~sol.bandpass_flag
    assert np.abs(sol.bandpass[ok] - 1).max() < 1e-3
    assert np.abs(np.abs(sol.gains[~sol.gain_flag]) - 1).max() < 1e-3
    unused = next(n for k, n in enumerate(names) if k not in used)
    with pytest.raises(CalibrationError, match="no usable solutions"):
        solve_calibrator(clean_ms, calibrator, refant=unused)


# -- interpolation between two solves -----------------------------------------------------------


def test_merged_gains_interpolate_between_two_solves(tables, cal, tmp_path: Path) -> None:
    """Check merging a later solve's gains and interpolating between two solves.

    A second solve two hours later, whose gains carry a known extra phase per antenna and
    whose bandpass another: merged against the first solve's bandpass, its gains are the
    total gain ``g_B B_B / B_A`` (analytic), and the apply step interpolates halfway between
    the two at the midpoint.
    """
    from dsa110_assets.calibration.apply import _antenna_map, _gains_for
    from dsa110_assets.processing.cal_rebase import merge_gain_tables

    bp_a, g_a = tables
    bp_b, g_b = tmp_path / "later.B", tmp_path / "later.G"
    shutil.copytree(bp_a, bp_b)
    shutil.copytree(g_a, g_b)
    gains_a = read_caltable(g_a)
    n_ant = len(gains_a.antenna_names)
    rng = np.random.default_rng(3)
    theta = rng.uniform(-0.8, 0.8, n_ant)  # radians: extra gain phase of the later solve
    phi = rng.uniform(-0.4, 0.4, n_ant)  # and of its bandpass (the opposite way)
    with pt.table(str(g_b), readonly=False, ack=False) as t:
        t.putcol("TIME", t.getcol("TIME") + 7200.0)
        ant = t.getcol("ANTENNA1")
        t.putcol("CPARAM", t.getcol("CPARAM") * np.exp(1j * theta[ant])[:, None, None])
    with pt.table(str(bp_b), readonly=False, ack=False) as t:
        ant = t.getcol("ANTENNA1")
        t.putcol("CPARAM", t.getcol("CPARAM") * np.exp(-1j * phi[ant])[:, None, None])
    merged_path = merge_gain_tables(g_a, bp_a, g_b, bp_b, tmp_path / "merged.G")
    merged = read_caltable(merged_path)
    n = gains_a.time.size
    assert merged.time.size == 2 * n
    assert np.allclose(merged.time[n:], gains_a.time + 7200.0)
    # later rows: g_A e^{i theta} e^{-i phi} (the bandpass ratio B_B / B_A = e^{-i phi})
    expected = gains_a.cparam * np.exp(1j * (theta - phi)[gains_a.antenna1])[:, None, None]
    ok = ~gains_a.flag
    assert np.allclose(merged.cparam[n:][ok], expected[ok], atol=1e-5)
    # the apply step's interpolation, at the midpoint between the two solves
    names = list(gains_a.antenna_names)
    ant_map = _antenna_map(merged, names)
    t_mid = np.array([float(gains_a.time.mean()) + 3600.0])
    at_mid = _gains_for(merged, int(merged.spw_id[0]), ant_map, t_mid)[0]
    first = _gains_for(gains_a, int(merged.spw_id[0]), _antenna_map(gains_a, names), t_mid)[0]
    solved = np.abs(first) > 0
    step = np.angle(at_mid[solved] * np.conj(first[solved]))
    want = np.broadcast_to(((theta - phi) / 2)[:, None], first.shape)[solved]
    # within 0.02 rad: the gains also drift (< 1 deg) between a solve's first and last interval
    assert np.allclose(step, want, atol=0.02)
