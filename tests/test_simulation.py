"""The correlator-output simulator: file format, physics, corruptions, noise, determinism."""

from __future__ import annotations

import csv
import hashlib
import re
import warnings
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import astropy.units as u
import h5py
import numpy as np
import pytest
from astropy.coordinates import EarthLocation, HADec, SkyCoord
from astropy.time import Time
from astropy.utils import iers
from scipy.special import j1

from dsa110_assets import instrument
from dsa110_assets.instrument import array_location
from dsa110_assets.naming import parse_subband_filename
from dsa110_assets.simulation import (
    PRESETS,
    SimulationConfig,
    SimulationResult,
    load_vla_calibrators,
    simulate_observations,
)
from dsa110_assets.simulation.sky import FIELD_PATTERN

iers.conf.auto_download = False

N_CHANNELS = 4
SUBBANDS = (0, 15)
C = 299_792_458.0


def _config(root: Path, **overrides: object) -> SimulationConfig:
    """Return a small configuration (8 antennas, 4 channels, 2 subbands) under ``root``."""
    values: dict[str, object] = dict(
        output_dir=root / "incoming",
        truth_dir=root / "truth",
        n_antennas=8,
        n_channels=N_CHANNELS,
        subbands=SUBBANDS,
        n_background_sources=5,
    )
    values.update(overrides)
    return SimulationConfig(**values)  # type: ignore[arg-type]


def _read(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {
            "visdata": f["Data/visdata"][()],
            "uvw": f["Header/uvw_array"][()],
            "time": f["Header/time_array"][()],
            "freq": f["Header/freq_array"][0],
            "ant1": f["Header/ant_1_array"][()],
            "ant2": f["Header/ant_2_array"][()],
            "lat": f["Header/latitude"][()],
            "lon": f["Header/longitude"][()],
            "alt": f["Header/altitude"][()],
            "dec0": f["Header/extra_keywords/phase_center_dec"][()],
            "chan_width": f["Header/channel_width"][()],
        }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[SimulationResult, list]:
    """Two groups with everything on; records the group callback calls."""
    calls: list[tuple[int, list[Path]]] = []
    cfg = _config(tmp_path_factory.mktemp("base"), n_groups=2)
    result = simulate_observations(cfg, on_group_written=lambda g, p: calls.append((g, p)))
    return result, calls


@pytest.fixture(scope="module")
def clean_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[SimulationResult, ...]:
    """Simulate one calibrator alone, without noise, with and without corruptions.

    The analytic single-source test; both runs use the same seed.
    """
    common = dict(n_background_sources=0, field_sources=False, noise=False, calibrator="3C286")
    clean = simulate_observations(
        _config(tmp_path_factory.mktemp("clean"), corruptions=False, **common)
    )
    corrupted = simulate_observations(
        _config(tmp_path_factory.mktemp("corrupted"), corruptions=True, **common)
    )
    return clean, corrupted


# 1. names, completeness, pyuvdata ------------------------------------------------------------


def test_files_are_named_like_the_correlator(base_run) -> None:
    result, _ = base_run
    assert len(result.files) == 2 * len(SUBBANDS)
    folder = result.files[0].parent
    assert not list(folder.glob("*_incomplete*"))
    assert sorted(folder.iterdir()) == sorted(result.files)
    for group in result.groups:
        parsed = [parse_subband_filename(p.name) for p in group.files]
        assert [p.subband for p in parsed] == list(SUBBANDS)
        base = group.start.replace(microsecond=0)
        for p in parsed:
            stamp = datetime.fromisoformat(p.timestamp).replace(tzinfo=UTC)
            assert timedelta(0) <= stamp - base <= timedelta(seconds=2)
    g0, g1 = result.groups
    assert g1.start - g0.start == timedelta(seconds=instrument.FILE_DURATION_S)


def test_callback_gets_each_group_in_order(base_run) -> None:
    result, calls = base_run
    assert [g for g, _ in calls] == [0, 1]
    assert [paths for _, paths in calls] == [g.files for g in result.groups]


def test_files_pass_pyuvdata_check(base_run) -> None:
    from pyuvdata import UVData

    result, _ = base_run
    path = result.files[0]
    # As with real DSA-110 files: uvw_array is float32, which pyuvdata's default read check
    # rejects, so the pipeline reads without the check and casts (as dsa110-contimg does).
    uvd = UVData.from_file(str(path), file_type="uvh5", run_check=False)
    uvd.uvw_array = uvd.uvw_array.astype(np.float64)
    with warnings.catch_warnings():
        # Expected for meridian-phased "drift" data: uvws point at dec0, not the zenith.
        warnings.filterwarnings("ignore", message="The uvw_array does not match")
        uvd.check()
    assert uvd.Nants_data == 8
    assert uvd.Ntimes == 24
    assert uvd.Nbls == 8 * 9 // 2
    assert uvd.telescope.name == "OVRO_MMA"


# 2. header -----------------------------------------------------------------------------------


def test_header_fields_match_the_correlator(base_run) -> None:
    result, _ = base_run
    sb00, sb15 = result.groups[0].files
    with h5py.File(sb00, "r") as f:
        h = f["Header"]
        assert h["telescope_name"][()] == b"OVRO_MMA"
        assert h["instrument"][()] == b"DSA"
        assert h["object_name"][()] == b"search"
        assert h["phase_type"][()] == b"drift"
        assert b"seed=42" in h["history"][()]
        assert h["Nants_telescope"][()] == 117
        assert h["Nants_data"][()] == 8
        assert h["Nbls"][()] == 36
        assert h["Ntimes"][()] == 24
        assert h["Nblts"][()] == 36 * 24
        assert h["Nfreqs"][()] == N_CHANNELS
        assert h["Npols"][()] == 2
        assert h["Nspws"][()] == 1
        assert list(h["spw_array"][()]) == [1]
        assert list(h["polarization_array"][()]) == [-5, -6]
        assert h["antenna_names"].dtype == np.dtype("S4")
        assert h["antenna_names"][0] == b"1" and h["antenna_names"][116] == b"117"
        assert list(h["antenna_numbers"][()]) == list(range(117))
        assert np.all(h["antenna_diameters"][()] == 4.65)
        assert h["antenna_positions"].shape == (117, 3)
        assert h["uvw_array"].dtype == np.float32
        assert h["uvw_array"].shape == (36 * 24, 3)
        assert h["time_array"].dtype == np.float64
        assert np.allclose(h["integration_time"][()], 12.884902)
        assert h["freq_array"].shape == (1, N_CHANNELS)
        freq = h["freq_array"][0]
        assert np.all(np.diff(freq) < 0)
        assert h["channel_width"][()] == pytest.approx(11.71875e6 / N_CHANNELS)
        ant1, ant2 = h["ant_1_array"][()], h["ant_2_array"][()]
        assert np.all(ant1 <= ant2)
        # time-major: the first Nbls rows share one time, and the uvw repeat every Nbls rows
        times = h["time_array"][()].reshape(24, 36)
        assert np.all(times == times[:, :1]) and np.all(np.diff(times[:, 0]) > 0)
        uvw = h["uvw_array"][()].reshape(24, 36, 3)
        assert np.all(uvw == uvw[:1])
        assert np.all(uvw[0, ant1[:36] == ant2[:36]] == 0)
        e = h["extra_keywords"]
        assert e["phase_center_dec"][()] == pytest.approx(np.radians(result.dec_deg))
        assert e["ha_phase_center"][()] == 0.0
        assert e["phase_center_epoch"][()] == b"HADEC"
        assert len(e["applied_delays_ns"][()].split()) == 117 * 2
        d = f["Data"]
        assert d["visdata"].dtype == np.complex64
        assert d["visdata"].shape == (36 * 24, 1, N_CHANNELS, 2)
        assert d["flags"].dtype == bool and not d["flags"][()].any()
        assert d["nsamples"].dtype == np.float32 and np.all(d["nsamples"][()] == 1.0)
    with h5py.File(sb15, "r") as f:
        assert f["Header/freq_array"][0].max() < freq.min()  # sb00 is the highest subband
    assert freq[0] == pytest.approx(1498.75e6 - 11.71875e6 / N_CHANNELS / 2)


# 3. physics ----------------------------------------------------------------------------------


def test_single_source_matches_analytic_hadec_prediction(clean_runs) -> None:
    clean, _ = clean_runs
    cal = load_vla_calibrators()["3C286"]
    for path in clean.files:
        d = _read(path)
        location = EarthLocation.from_geodetic(d["lon"] * u.deg, d["lat"] * u.deg, d["alt"] * u.m)
        times = Time(d["time"], format="jd", scale="utc")
        frame = HADec(obstime=times, location=location, pressure=0 * u.hPa)
        src = SkyCoord(cal.ra_deg * u.deg, cal.dec_deg * u.deg).transform_to(frame)
        h, dec, dec0 = src.ha.rad, src.dec.rad, d["dec0"]
        # direction cosines relative to (HA 0, dec0): l east, m north, n toward the centre
        l_ = -np.cos(dec) * np.sin(h)
        m_ = np.sin(dec) * np.cos(dec0) - np.cos(dec) * np.sin(dec0) * np.cos(h)
        n_ = np.sin(dec) * np.sin(dec0) + np.cos(dec) * np.cos(dec0) * np.cos(h)
        wavelength = C / d["freq"]
        x = np.pi * 4.65 * np.sqrt(1 - n_**2)[:, None] / wavelength
        beam = (2 * j1(x) / x) ** 2
        flux = cal.flux_1400_jy * (d["freq"] / 1.4e9) ** cal.spectral_index
        uvw = d["uvw"].astype(np.float64)
        geometric = uvw[:, 0] * l_ + uvw[:, 1] * m_ + uvw[:, 2] * (n_ - 1)
        # the instrument document's convention: V = S A exp(+2 pi i (ul + vm + w (n - 1)) / lambda)
        expected = flux * beam * np.exp(2j * np.pi * geometric[:, None] / wavelength)
        cross = d["ant1"] != d["ant2"]
        for pol in range(2):
            got = d["visdata"][:, 0, :, pol]
            ratio = got[cross] / expected[cross]
            np.testing.assert_allclose(np.abs(ratio), 1.0, atol=0.005)
            assert np.degrees(np.abs(np.angle(ratio))).max() < 2.0
            autos = got[~cross]
            np.testing.assert_allclose(autos.real, 6500.0 + (flux * beam)[~cross], rtol=1e-5)
            assert np.all(autos.imag == 0)
        assert np.abs(uvw[cross]).max() > 300  # the check covers long baselines


def test_group_is_centred_on_the_calibrator_transit(clean_runs) -> None:
    clean, _ = clean_runs
    d = _read(clean.files[0])
    mid = Time(d["time"].mean(), format="jd", scale="utc")
    cal = load_vla_calibrators()["3C286"]
    location = EarthLocation.from_geodetic(d["lon"] * u.deg, d["lat"] * u.deg, d["alt"] * u.m)
    frame = HADec(obstime=mid, location=location, pressure=0 * u.hPa)
    ha = SkyCoord(cal.ra_deg * u.deg, cal.dec_deg * u.deg).transform_to(frame).ha
    assert abs(ha.wrap_at(180 * u.deg).deg) < 0.01
    assert mid.to_datetime().date() == datetime(2026, 1, 15).date()
    assert clean.groups[0].has_calibrator
    assert clean.dec_deg == pytest.approx(cal.dec_deg)


# 4. corruptions ------------------------------------------------------------------------------


def test_corruptions_are_the_truth_gains_and_bandpass(clean_runs) -> None:
    clean, corrupted = clean_runs
    with h5py.File(corrupted.truth_path, "r") as f:
        assert "conj(G_ant1) * G_ant2" in f.attrs["convention"]
        antennas = f["antenna_indices"][()]
        gains, bandpass = f["gains"][()], f["bandpass"][()]
        truth_freqs = f["freqs_hz"][()]
        assert gains.shape == (24, 8, 2) and bandpass.shape == (8, 16 * N_CHANNELS, 2)
        assert gains.dtype == np.complex64 and bandpass.dtype == np.complex64
    position = {int(a): k for k, a in enumerate(antennas)}
    for sb, clean_path, corrupt_path in zip(SUBBANDS, clean.files, corrupted.files, strict=True):
        a, b = _read(clean_path), _read(corrupt_path)
        fslice = slice(sb * N_CHANNELS, (sb + 1) * N_CHANNELS)
        np.testing.assert_array_equal(truth_freqs[fslice], a["freq"])
        i = np.array([position[int(x)] for x in a["ant1"]])
        j = np.array([position[int(x)] for x in a["ant2"]])
        t = np.repeat(np.arange(24), 36)
        # the file holds <E1* E2>: a voltage gain G enters as conj(G_ant1) G_ant2
        g = np.conj(gains[t[:, None], i[:, None], [0, 1]]) * gains[t[:, None], j[:, None], [0, 1]]
        bp = np.conj(bandpass[i, fslice]) * bandpass[j, fslice]  # (Nblts, Nf, 2)
        expected = g[:, None, :] * bp
        ratio = b["visdata"][:, 0] / a["visdata"][:, 0]
        np.testing.assert_allclose(ratio, expected, rtol=2e-5, atol=0)
        assert not np.allclose(ratio, 1.0)


# 5. noise ------------------------------------------------------------------------------------


def test_thermal_noise_matches_the_radiometer_equation(tmp_path: Path) -> None:
    cfg = _config(  # an empty sky: the data are the noise
        tmp_path,
        calibrator=None,
        n_background_sources=0,
        field_sources=False,
        corruptions=False,
        subbands=(3,),
    )
    result = simulate_observations(cfg)
    d = _read(result.files[0])
    sigma = 6500.0 / np.sqrt(2 * d["chan_width"] * 12.884902)
    cross = d["visdata"][d["ant1"] != d["ant2"]]
    assert np.std(cross.real) == pytest.approx(sigma, rel=0.05)
    assert np.std(cross.imag) == pytest.approx(sigma, rel=0.05)
    assert abs(np.mean(cross.real)) < 5 * sigma / np.sqrt(cross.size)
    autos = d["visdata"][d["ant1"] == d["ant2"]]
    assert np.all(autos.imag == 0)
    auto_sigma = 6500.0 / np.sqrt(d["chan_width"] * 12.884902)
    assert np.std(autos.real) == pytest.approx(auto_sigma, rel=0.15)
    assert np.mean(autos.real) == pytest.approx(6500.0, rel=1e-3)
    assert not result.groups[0].has_calibrator


# 6. determinism and safety -------------------------------------------------------------------


def test_same_seed_gives_identical_bytes(base_run, tmp_path: Path) -> None:
    result, _ = base_run
    again = simulate_observations(_config(tmp_path / "again", n_groups=2))
    assert [p.name for p in again.files] == [p.name for p in result.files]
    assert [_sha256(p) for p in again.files] == [_sha256(p) for p in result.files]
    with h5py.File(again.truth_path, "r") as a, h5py.File(result.truth_path, "r") as b:
        for name in ("gains", "bandpass", "times_jd", "freqs_hz", "antenna_indices"):
            np.testing.assert_array_equal(a[name][()], b[name][()])
    assert again.catalog_path.read_bytes() == result.catalog_path.read_bytes()
    other = simulate_observations(_config(tmp_path / "other", n_groups=1, seed=7))
    assert _sha256(other.files[0]) != _sha256(result.files[0])


def test_never_overwrites_existing_files(base_run) -> None:
    result, _ = base_run
    before = {p: _sha256(p) for p in result.files}
    cfg = _config(result.files[0].parent.parent, n_groups=2)
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        simulate_observations(cfg)
    assert {p: _sha256(p) for p in result.files} == before


def test_config_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown calibrator 'NOPE'"):
        _config(tmp_path, calibrator="NOPE")
    with pytest.raises(ValueError, match="truth_dir must differ"):
        _config(tmp_path, truth_dir=tmp_path / "incoming")
    with pytest.raises(ValueError, match="subbands"):
        _config(tmp_path, subbands=(16,))
    with pytest.raises(ValueError, match="calibrator_groups"):
        _config(tmp_path, calibrator_groups=(3,))
    assert PRESETS["full"] == {"n_antennas": 96, "n_channels": 48}
    assert replace(_config(tmp_path), **PRESETS["small"]).n_antennas == 12


# 7. catalog and truth ------------------------------------------------------------------------


def test_catalog_has_calibrator_and_background(base_run) -> None:
    result, _ = base_run
    assert result.catalog_path.name == "sky_catalog.csv"
    assert result.catalog_path.parent != result.files[0].parent
    with result.catalog_path.open() as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == [
            "name",
            "ra_deg",
            "dec_deg",
            "flux_1400_jy",
            "spectral_index",
        ]
        rows = list(reader)
    assert len(rows) == 1 + 2 * len(FIELD_PATTERN) + 5  # calibrator, two groups' fields, background
    cal = load_vla_calibrators()["3C286"]
    assert rows[0]["name"] == "3C286"
    assert float(rows[0]["ra_deg"]) == pytest.approx(cal.ra_deg, abs=1e-7)
    assert float(rows[0]["flux_1400_jy"]) == 14.9
    assert [r["name"][:5] for r in rows[1:17]] == ["FLD0_"] * 8 + ["FLD1_"] * 8
    for row in rows[17:]:
        assert re.fullmatch(r"SIM_J\d{6}[+-]\d{6}", row["name"])
        assert abs(float(row["dec_deg"]) - result.dec_deg) <= 3.0
        assert 0.02 <= float(row["flux_1400_jy"]) <= 1.0
    with h5py.File(result.truth_path, "r") as f:
        assert f["times_jd"].shape == (48,)
        assert f["groups/0001/files"][()].tolist() == [
            p.name.encode() for p in result.groups[1].files
        ]
        assert '"seed": 42' in f.attrs["config"]


def test_the_default_sky_has_sources_in_every_quadrant_at_distinct_radii(base_run) -> None:
    """Check the default sky cannot be mapped onto itself by a mirror.

    Around each group's pointing (the meridian at mid-group): two sources per quadrant, no
    two at the same radius, one bright one near the half-power radius, so neither a point
    reflection nor an east-west or north-south mirror maps the sky onto itself.
    """
    result, _ = base_run
    for g, group in enumerate(result.groups):
        mid = Time(group.start) + 12 * 12.884902 * u.s  # 24 integrations of 12.88 s
        meridian = SkyCoord(
            ha=0 * u.deg,
            dec=result.dec_deg * u.deg,
            frame=HADec(obstime=mid, location=array_location(), pressure=0 * u.hPa),
        ).transform_to("icrs")
        field = [s for s in result.sources if s.name.startswith(f"FLD{g}_")]
        where = SkyCoord([s.ra_deg for s in field] * u.deg, [s.dec_deg for s in field] * u.deg)
        pa = meridian.position_angle(where).deg
        radius = meridian.separation(where).deg
        np.testing.assert_allclose(radius, [p[1] for p in FIELD_PATTERN], atol=1e-6)
        assert sorted(np.bincount((pa // 90).astype(int), minlength=4)) == [2, 2, 2, 2]
        assert np.diff(np.sort(radius)).min() >= 0.05
        bright = max(field, key=lambda s: s.flux_1400_jy)
        assert bright.flux_1400_jy >= 2.0
        assert meridian.separation(SkyCoord(bright.ra_deg, bright.dec_deg, unit="deg")).deg > 0.9


def test_vla_calibrator_positions() -> None:
    cals = load_vla_calibrators()
    assert {"3C48", "3C138", "3C147", "3C196", "0834+555", "3C286", "3C295"} <= set(cals)
    c = SkyCoord("13:31:08.2881 +30:30:32.959", unit=(u.hourangle, u.deg))
    assert cals["3C286"].ra_deg == pytest.approx(c.ra.deg, abs=1e-6)
    assert cals["3C286"].dec_deg == pytest.approx(c.dec.deg, abs=1e-6)
    assert cals["3C48"].ra_deg == pytest.approx(24.4220808, abs=1e-6)


# 8. instrument -------------------------------------------------------------------------------


def test_stations_load_from_the_package() -> None:
    stations = instrument.load_stations()
    assert len(stations) == 117
    assert stations.names[0] == "DSA-001" and stations.names[-1] == "DSA-117"
    assert not stations.has_elevation[[108, 116]].any()
    assert stations.height_m[116] == pytest.approx(np.median(stations.height_m[:116]), abs=1)
    assert np.ptp(stations.lat_deg[:51]) == 0  # the east-west arm shares one latitude
    radius = np.linalg.norm(stations.itrf_m, axis=1)
    assert np.all((radius > 6.36e6) & (radius < 6.38e6))


def test_data_antennas_keep_arm_proportions() -> None:
    def arms(idx: np.ndarray) -> tuple[int, int, int]:
        number = idx + 1
        return (
            int((number <= 51).sum()),
            int(((number >= 52) & (number <= 102)).sum()),
            int((number >= 103).sum()),
        )

    full = instrument.data_antennas()
    assert len(full) == len(np.unique(full)) == 96
    assert arms(full) == (47, 35, 14)
    assert 116 not in full  # DSA-117 has no surveyed elevation
    for n in (6, 8, 12, 30):
        idx = instrument.data_antennas(n)
        assert len(np.unique(idx)) == n
        np.testing.assert_array_equal(idx, instrument.data_antennas(n))
        ew, ns, out = arms(idx)
        assert ew >= 2 and ns >= 2 and out >= 1
        assert abs(ew / n - 47 / 96) < 0.15 and abs(ns / n - 35 / 96) < 0.15
    assert arms(instrument.data_antennas(12)) == (6, 4, 2)
    small = instrument.data_antennas(8) + 1
    assert {1, 51, 52, 102} <= set(small.tolist())  # each arm spans its full length
    with pytest.raises(ValueError):
        instrument.data_antennas(97)


def test_airy_beam() -> None:
    freq = 1.4e9
    wavelength = C / freq
    assert instrument.airy_power_beam(0.0, freq) == 1.0
    half_power_radius = 1.029 * wavelength / 4.65 / 2
    assert instrument.airy_power_beam(half_power_radius, freq) == pytest.approx(0.5, abs=0.01)
    first_null = 1.2197 * wavelength / 4.65
    assert instrument.airy_power_beam(first_null, freq) < 1e-6


def test_subband_frequencies() -> None:
    f0 = instrument.subband_frequencies(0)
    assert f0.shape == (48,) and f0[0] == 1498.75e6 - 244140.625 / 2
    assert np.allclose(np.diff(f0), -244140.625)
    coarse = instrument.subband_frequencies(15, 4)
    assert coarse[-1] - 11.71875e6 / 8 == pytest.approx(1311.25e6)
    band = instrument.band_frequencies(4)
    assert np.all(np.diff(band) < 0) and band.size == 64
