"""UVH5 -> Measurement Set conversion: content, geometry, failures, staging and the science.

One small simulated group (16 antennas, 16 subbands x 4 channels, 24 integrations, 3C286 alone,
no noise, no corruptions) is converted once per module and checked against independent
calculations: h5py for the input visibilities, astropy's HADec frame for the field centres,
pyuvdata's CASA-tested ``calc_uvw`` for UVW, and WSClean for the end-to-end sign and geometry.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import uuid
from datetime import timedelta
from pathlib import Path

import astropy.units as u
import h5py
import numpy as np
import pytest
from astropy.coordinates import ICRS, ITRS, EarthLocation, HADec, SkyCoord
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS
from casacore import tables as pt

from dsa110_assets import safe_fs
from dsa110_assets.conversion import (
    ConversionResult,
    InvalidSubbandFile,
    convert_group,
    plan_staging,
)
from dsa110_assets.conversion.ms_writer import MainLayout, MeasurementSetWriter, estimate_ms_bytes
from dsa110_assets.instrument import (
    ARRAY_HEIGHT_M,
    ARRAY_LAT_DEG,
    ARRAY_LON_DEG,
    SPEED_OF_LIGHT_M_S,
    airy_power_beam,
    subband_frequencies,
)
from dsa110_assets.naming import parse_subband_filename
from dsa110_assets.simulation import SimulationConfig, simulate_observations

N_ANTENNAS = 16
N_CHANNELS = 4
N_TIMES = 24
MISSING = (3, 7)
SIM = dict(
    n_groups=1,
    n_antennas=N_ANTENNAS,
    n_channels=N_CHANNELS,
    seed=1,
    calibrator="3C286",
    n_background_sources=0,
    noise=False,
    corruptions=False,
)


# -- fixtures ------------------------------------------------------------------------------


# ``root``, ``sim`` and ``files`` (this module's SIM observed once) come from conftest.py.


def _dirs(root: Path, tag: str) -> dict[str, Path]:
    """Staging and output folders; the tmpfs folder must exist for its free space to count."""
    base = root / tag
    (base / "shm").mkdir(parents=True, exist_ok=True)
    return {"tmpfs_dir": base / "shm", "scratch_dir": base / "scratch", "out": base / "ms"}


def _convert(files: dict[int, Path], root: Path, tag: str, **kwargs) -> ConversionResult:
    d = _dirs(root, tag)
    return convert_group(
        files,
        d["out"] / "group.ms",
        tmpfs_dir=d["tmpfs_dir"],
        scratch_dir=d["scratch_dir"],
        **kwargs,
    )


@pytest.fixture(scope="module")
def converted(files: dict[int, Path], root: Path) -> ConversionResult:
    return _convert(files, root, "full")


@pytest.fixture(scope="module")
def converted_missing(files: dict[int, Path], root: Path) -> ConversionResult:
    present = {sb: p for sb, p in files.items() if sb not in MISSING}
    return _convert(present, root, "missing")


def _table(path: Path, sub: str | None = None) -> pt.table:
    return pt.table(str(path) + (f"/{sub}" if sub else ""), ack=False)


def _column(path: Path, column: str, sub: str | None = None) -> np.ndarray:
    with _table(path, sub) as t:
        return t.getcol(column)


def _local(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(tmpfs, scratch, destination) folders of one test; the tmpfs one exists."""
    shm = tmp_path / "shm"
    shm.mkdir(exist_ok=True)
    return shm, tmp_path / "scratch", tmp_path / "ms"


def _hidden_entries(*folders: Path) -> list[Path]:
    """Staging or partial copies left behind (all of them are hidden names)."""
    return [e for f in folders if f.exists() for e in f.iterdir() if e.name.startswith(".")]


def _location() -> EarthLocation:
    return EarthLocation.from_geodetic(
        ARRAY_LON_DEG * u.deg, ARRAY_LAT_DEG * u.deg, ARRAY_HEIGHT_M * u.m
    )


# -- structure ---------------------------------------------------------------------------


def test_ms_opens_with_casacore_and_the_casacore_tools(converted: ConversionResult) -> None:
    ms = converted.ms_path
    with _table(ms) as t:
        assert t.nrows() == converted.n_rows == 16 * N_TIMES * N_ANTENNAS * (N_ANTENNAS + 1) // 2
        for column in ("DATA", "CORRECTED_DATA", "FLAG", "WEIGHT", "SIGMA", "UVW"):
            assert column in t.colnames()
        assert "MODEL_DATA" not in t.colnames()  # CASA then assumes a 1 Jy point at the centre
        assert t.getcolkeyword("UVW", "MEASINFO")["Ref"] == "J2000"
    info = subprocess.run(["showtableinfo", f"in={ms}"], capture_output=True, text=True)
    assert info.returncode == 0, info.stderr
    assert f"{converted.n_rows} rows" in info.stdout
    query = subprocess.run(
        ["taql", f"select gcount() as n from {ms} where not FLAG_ROW"],
        capture_output=True,
        text=True,
    )
    assert query.returncode == 0, query.stderr
    assert query.stdout.split()[-1] == str(converted.n_rows)  # nothing flagged
    assert converted.n_spw == 16 and converted.n_channels == 16 * N_CHANNELS
    assert converted.n_antennas == N_ANTENNAS and converted.n_times == N_TIMES
    assert converted.missing_subbands == []
    assert converted.size_bytes > 0 and converted.tier == "tmpfs"
    assert converted.start_mjd < converted.mid_mjd < converted.end_mjd
    assert (converted.end_mjd - converted.start_mjd) * 86400 == pytest.approx(309.2, abs=0.1)
    for key in ("read_s", "phase_s", "write_s", "total_s"):
        assert converted.timings[key] >= 0


def test_spectral_windows_ascend_one_per_subband(converted: ConversionResult) -> None:
    ms = converted.ms_path
    chan_freq = _column(ms, "CHAN_FREQ", "SPECTRAL_WINDOW")
    width = _column(ms, "CHAN_WIDTH", "SPECTRAL_WINDOW")
    assert chan_freq.shape == (16, N_CHANNELS)
    assert np.all(np.diff(chan_freq.ravel()) > 0)  # ascending within and across windows
    for spw in range(16):
        expected = np.sort(subband_frequencies(15 - spw, N_CHANNELS))
        np.testing.assert_allclose(chan_freq[spw], expected, rtol=0, atol=1e-3)
    np.testing.assert_allclose(width, 11.71875e6 / N_CHANNELS)
    np.testing.assert_allclose(_column(ms, "TOTAL_BANDWIDTH", "SPECTRAL_WINDOW"), 11.71875e6)
    np.testing.assert_array_equal(_column(ms, "NUM_CHAN", "SPECTRAL_WINDOW"), N_CHANNELS)
    np.testing.assert_array_equal(_column(ms, "MEAS_FREQ_REF", "SPECTRAL_WINDOW"), 5)  # TOPO
    np.testing.assert_allclose(_column(ms, "REF_FREQUENCY", "SPECTRAL_WINDOW"), chan_freq[:, 0])
    np.testing.assert_array_equal(
        _column(ms, "SPECTRAL_WINDOW_ID", "DATA_DESCRIPTION"), np.arange(16)
    )
    np.testing.assert_array_equal(_column(ms, "CORR_TYPE", "POLARIZATION"), [[9, 12]])
    np.testing.assert_array_equal(_column(ms, "CORR_PRODUCT", "POLARIZATION"), [[[0, 0], [1, 1]]])
    assert _column(ms, "TELESCOPE_NAME", "OBSERVATION")[0] == "OVRO_MMA"
    with _table(ms) as t:
        np.testing.assert_array_equal(t.getkeyword("DSA110_SPW_SUBBANDS"), np.arange(15, -1, -1))


def test_antenna_table_holds_all_stations_at_absolute_itrf(
    converted: ConversionResult, files: dict[int, Path]
) -> None:
    ms = converted.ms_path
    with h5py.File(files[0]) as f:
        offsets = f["Header/antenna_positions"][()]
    centre = np.array([c.to_value(u.m) for c in _location().to_geocentric()])
    positions = _column(ms, "POSITION", "ANTENNA")
    assert positions.shape == (117, 3)
    np.testing.assert_allclose(positions, centre + offsets, atol=1e-6)
    np.testing.assert_allclose(_column(ms, "DISH_DIAMETER", "ANTENNA"), 4.65)
    names = list(_column(ms, "NAME", "ANTENNA"))
    assert names[0] == "DSA-001" and names[-1] == "DSA-117"
    assert set(_column(ms, "MOUNT", "ANTENNA")) == {"ALT-AZ"}


# -- geometry ------------------------------------------------------------------------------


def test_one_field_per_integration_at_the_icrs_meridian_point(
    converted: ConversionResult, files: dict[int, Path]
) -> None:
    ms = converted.ms_path
    with h5py.File(files[0]) as f:
        dec0 = f["Header/extra_keywords/phase_center_dec"][()]
        times_jd = np.unique(f["Header/time_array"][()])
    names = list(_column(ms, "NAME", "FIELD"))
    assert names == [f"meridian_icrs_t{i}" for i in range(N_TIMES)]
    phase_dir = _column(ms, "PHASE_DIR", "FIELD")[:, 0, :]
    for column in ("DELAY_DIR", "REFERENCE_DIR"):
        np.testing.assert_array_equal(_column(ms, column, "FIELD")[:, 0, :], phase_dir)

    # Independent route: astropy's HADec frame at hour angle 0 (no refraction) -> ICRS.
    obstime = Time(times_jd, format="jd", scale="utc")
    frame = HADec(obstime=obstime, location=_location(), pressure=0 * u.hPa)
    meridian = SkyCoord(
        ha=np.zeros(N_TIMES) * u.deg, dec=np.full(N_TIMES, np.degrees(dec0)) * u.deg, frame=frame
    ).transform_to(ICRS())
    written = SkyCoord(phase_dir[:, 0] * u.rad, phase_dir[:, 1] * u.rad, frame="icrs")
    assert written.separation(meridian).to_value(u.mas).max() < 1.0

    time_s = _column(ms, "TIME")
    field_id = _column(ms, "FIELD_ID")
    expected_s = (times_jd - 2400000.5) * 86400.0
    np.testing.assert_allclose(np.unique(time_s), expected_s, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(field_id, np.searchsorted(expected_s, time_s - 1e-3))
    centre = meridian[N_TIMES // 2]
    assert converted.field_name == f"meridian_icrs_t{N_TIMES // 2}"
    assert converted.pointing_ra_deg == pytest.approx(centre.ra.deg, abs=1e-8)
    assert converted.pointing_dec_deg == pytest.approx(centre.dec.deg, abs=1e-8)


def test_uvw_match_pyuvdata_in_the_ms_sign_convention(converted: ConversionResult) -> None:
    """UVW equal pyuvdata's ``calc_uvw`` toward each field's ICRS centre, negated.

    ``calc_uvw`` uses apparent coordinates and the frame position angle (tested against CASA);
    the negation is what pyuvdata's ``write_ms`` writes.
    """
    from pyuvdata.utils import phasing

    ms = converted.ms_path
    with _table(ms) as t, t.query("DATA_DESC_ID == 0") as sel:
        uvw = sel.getcol("UVW")
        ant1, ant2 = sel.getcol("ANTENNA1"), sel.getcol("ANTENNA2")
        field_id = sel.getcol("FIELD_ID")
    positions = _column(ms, "POSITION", "ANTENNA")
    phase_dir = _column(ms, "PHASE_DIR", "FIELD")[:, 0, :]
    times_jd = _column(ms, "TIME", "FIELD") / 86400.0 + 2400000.5
    location = _location()
    app_ra, app_dec = np.empty(N_TIMES), np.empty(N_TIMES)
    for i in range(N_TIMES):
        ra, dec = phasing.calc_app_coords(
            lon_coord=phase_dir[i : i + 1, 0],
            lat_coord=phase_dir[i : i + 1, 1],
            coord_frame="icrs",
            coord_epoch=2000.0,
            time_array=times_jd[i : i + 1],
            telescope_loc=location,
        )
        app_ra[i], app_dec[i] = ra[0], dec[0]
    frame_pa = phasing.calc_frame_pos_angle(
        time_array=times_jd,
        app_ra=app_ra,
        app_dec=app_dec,
        telescope_loc=location,
        ref_frame="icrs",
        ref_epoch=2000.0,
    )
    lst = Time(times_jd, format="jd").sidereal_time("apparent", longitude=location.lon).rad
    centre = np.array([c.to_value(u.m) for c in location.to_geocentric()])
    expected = phasing.calc_uvw(
        app_ra=app_ra[field_id],
        app_dec=app_dec[field_id],
        frame_pa=frame_pa[field_id],
        lst_array=lst[field_id],
        use_ant_pos=True,
        antenna_positions=positions - centre,
        antenna_numbers=np.arange(len(positions)),
        ant_1_array=ant1,
        ant_2_array=ant2,
        telescope_lat=location.lat.rad,
        telescope_lon=location.lon.rad,
    )
    baseline = np.linalg.norm(positions[ant2] - positions[ant1], axis=1)
    # Both take the local ICRS north by a finite difference (0.5 deg there, 1e-4 rad here):
    # they agree to 1e-5 of the baseline, far below what would move a source.
    error = np.linalg.norm(uvw - (-expected), axis=1)
    assert np.all(error <= 2e-5 * baseline + 1e-3)
    np.testing.assert_allclose(np.linalg.norm(uvw, axis=1), baseline, rtol=0, atol=1e-6)


def test_w_is_the_delay_toward_the_fringe_stop_centre(
    converted: ConversionResult, files: dict[int, Path]
) -> None:
    """W is exactly the fringe-stop delay of the MS baseline x(ant1) - x(ant2).

    No phase rotation is applied, so nothing else can enter it.
    """
    ms = converted.ms_path
    with h5py.File(files[0]) as f:
        dec0 = f["Header/extra_keywords/phase_center_dec"][()]
        lon = np.radians(f["Header/longitude"][()])
    s0 = np.array([np.cos(dec0) * np.cos(lon), np.cos(dec0) * np.sin(lon), np.sin(dec0)])
    positions = _column(ms, "POSITION", "ANTENNA")
    uvw, ant1, ant2 = (_column(ms, c) for c in ("UVW", "ANTENNA1", "ANTENNA2"))
    np.testing.assert_allclose(uvw[:, 2], (positions[ant1] - positions[ant2]) @ s0, atol=1e-6)


# -- data ----------------------------------------------------------------------------------


def test_data_equal_the_input_visibilities(
    converted: ConversionResult, files: dict[int, Path]
) -> None:
    ms = converted.ms_path
    with _table(ms) as t:
        for spw in (0, 6, 15):
            sb = 15 - spw
            with h5py.File(files[sb]) as f:
                vis = f["Data/visdata"][:, 0]
                ant1, ant2 = f["Header/ant_1_array"][()], f["Header/ant_2_array"][()]
                width = f["Header/channel_width"][()]
                integration = f["Header/integration_time"][()]
            with t.query(f"DATA_DESC_ID == {spw}") as sel:
                data = sel.getcol("DATA")
                np.testing.assert_array_equal(data, np.conj(vis[:, ::-1, :]))  # bit for bit
                np.testing.assert_array_equal(sel.getcol("CORRECTED_DATA"), data)
                assert "MODEL_DATA" not in sel.colnames()
                assert not np.any(sel.getcol("FLAG")) and not np.any(sel.getcol("FLAG_ROW"))
                np.testing.assert_array_equal(sel.getcol("ANTENNA1"), ant1)
                np.testing.assert_array_equal(sel.getcol("ANTENNA2"), ant2)
                weight = 2.0 * width * integration
                weight = np.broadcast_to(weight[:, None], (weight.size, 2))
                np.testing.assert_allclose(sel.getcol("WEIGHT"), weight, rtol=1e-6)
                np.testing.assert_allclose(sel.getcol("SIGMA"), weight**-0.5, rtol=1e-6)
                np.testing.assert_allclose(sel.getcol("INTERVAL"), integration)


def test_missing_subbands_become_flagged_windows(
    converted_missing: ConversionResult, converted: ConversionResult
) -> None:
    ms = converted_missing.ms_path
    assert converted_missing.missing_subbands == list(MISSING)
    assert converted_missing.n_spw == 16 and converted_missing.n_rows == converted.n_rows
    chan_freq = _column(ms, "CHAN_FREQ", "SPECTRAL_WINDOW")
    names = list(_column(ms, "NAME", "SPECTRAL_WINDOW"))
    with _table(ms) as t:
        np.testing.assert_array_equal(t.getkeyword("DSA110_MISSING_SUBBANDS"), MISSING)
        for spw in range(16):
            sb = 15 - spw
            np.testing.assert_allclose(
                chan_freq[spw], np.sort(subband_frequencies(sb, N_CHANNELS)), atol=1e-3
            )
            with t.query(f"DATA_DESC_ID == {spw}") as sel:
                flags, flag_row = sel.getcol("FLAG"), sel.getcol("FLAG_ROW")
                if sb in MISSING:
                    assert names[spw] == f"sb{sb:02d}_missing"
                    assert flags.all() and flag_row.all()
                    assert not np.any(sel.getcol("DATA")) and not np.any(sel.getcol("WEIGHT"))
                else:
                    assert names[spw] == f"sb{sb:02d}"
                    assert not flags.any() and not flag_row.any()
    history = " ".join(_column(ms, "MESSAGE", "HISTORY"))
    assert "Missing subbands: sb03, sb07" in history


# -- invalid input -------------------------------------------------------------------------


def _truncated(path: Path, folder: Path) -> Path:
    copy = folder / path.name
    data = path.read_bytes()
    copy.write_bytes(data[: len(data) * 6 // 10])
    return copy


def _garbage(path: Path, folder: Path) -> Path:
    copy = folder / path.name
    copy.write_bytes(bytes(range(256)) * 64)
    return copy


def _other_channel_count(path: Path, folder: Path) -> Path:
    sb = parse_subband_filename(path.name).subband
    config = {**SIM, "n_channels": 2}
    result = simulate_observations(
        SimulationConfig(
            output_dir=folder / "incoming", truth_dir=folder / "truth", subbands=(sb,), **config
        )
    )
    return result.files[0]


def _other_observation(path: Path, folder: Path) -> Path:
    """Write the same subband from the next five minutes: its integration times differ."""
    sb = parse_subband_filename(path.name).subband
    with h5py.File(path) as f:
        first_jd = float(f["Header/time_array"][0])
    start = Time(first_jd, format="jd").to_datetime() + timedelta(minutes=6)
    result = simulate_observations(
        SimulationConfig(
            output_dir=folder / "incoming",
            truth_dir=folder / "truth",
            subbands=(sb,),
            start=start,
            dec_deg=30.5091553,
            **SIM,
        )
    )
    return result.files[0]


@pytest.mark.parametrize(
    ("make_bad", "problem"),
    [
        (_truncated, "cannot be opened as HDF5"),
        (_garbage, "cannot be opened as HDF5"),
        (_other_channel_count, "n_freqs is 2 instead of 4"),
        (_other_observation, "time_array"),
    ],
    ids=["truncated", "garbage", "nfreqs", "other-observation"],
)
def test_bad_files_raise_invalid_subband_file_naming_the_file(
    make_bad, problem: str, files: dict[int, Path], tmp_path: Path
) -> None:
    bad = make_bad(files[5], tmp_path)
    group = {**files, 5: bad}
    shm, scratch, out = _local(tmp_path)
    ms_path = out / "group.ms"
    with pytest.raises(InvalidSubbandFile) as err:
        convert_group(group, ms_path, tmpfs_dir=shm, scratch_dir=scratch)
    assert err.value.path == bad
    assert str(bad) in str(err.value) and problem in str(err.value)
    assert not ms_path.exists()
    assert not _hidden_entries(shm, scratch, out)


def test_a_file_filed_under_the_wrong_subband_is_refused(
    files: dict[int, Path], tmp_path: Path
) -> None:
    group = {sb: p for sb, p in files.items() if sb != 6}
    group[6] = files[5]
    group.pop(5)
    with pytest.raises(InvalidSubbandFile, match="do not belong to sb06") as err:
        convert_group(group, tmp_path / "g.ms", tmpfs_dir=None, scratch_dir=tmp_path)
    assert err.value.path == files[5]


def test_subband_indices_outside_the_group_are_refused(
    files: dict[int, Path], tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="outside"):
        convert_group({16: files[0]}, tmp_path / "g.ms", tmpfs_dir=None, scratch_dir=tmp_path)
    with pytest.raises(ValueError, match="no subband files"):
        convert_group({}, tmp_path / "g.ms", tmpfs_dir=None, scratch_dir=tmp_path)


# -- staging and publication ---------------------------------------------------------------


def test_plan_staging_uses_tmpfs_only_below_80_percent_of_its_free_space(tmp_path: Path) -> None:
    shm, ssd = tmp_path / "shm", tmp_path / "ssd"
    assert plan_staging(799, shm, ssd, tmpfs_free_bytes=1000) == ("tmpfs", shm)
    assert plan_staging(800, shm, ssd, tmpfs_free_bytes=1000) == ("ssd", ssd)
    assert plan_staging(10**12, shm, ssd, tmpfs_free_bytes=10**9) == ("ssd", ssd)
    assert plan_staging(1, None, ssd) == ("ssd", ssd)
    assert plan_staging(1, tmp_path / "does-not-exist", ssd) == ("ssd", ssd)
    assert plan_staging(1, tmp_path, ssd) == ("tmpfs", tmp_path)  # measured free space
    with pytest.raises(ValueError):
        plan_staging(-1, shm, ssd)


def test_small_tmpfs_falls_back_to_the_ssd(
    files: dict[int, Path], root: Path, converted: ConversionResult
) -> None:
    result = _convert(files, root, "small-tmpfs", tmpfs_free_bytes=1024)
    assert result.tier == "ssd"
    np.testing.assert_array_equal(
        _column(result.ms_path, "DATA"), _column(converted.ms_path, "DATA")
    )
    d = _dirs(root, "small-tmpfs")
    assert not _hidden_entries(d["scratch_dir"], d["out"])


def test_staging_on_another_filesystem_is_copied_into_place(
    files: dict[int, Path], tmp_path: Path, converted: ConversionResult
) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs a tmpfs on another filesystem than the test folder")
    tmpfs_dir = shm / f"test-conversion-{uuid.uuid4().hex[:8]}"
    tmpfs_dir.mkdir()
    try:
        ms_path = tmp_path / "ms" / "group.ms"
        result = convert_group(
            files, ms_path, tmpfs_dir=tmpfs_dir, scratch_dir=tmp_path / "scratch"
        )
        assert result.tier == "tmpfs"
        for column in ("DATA", "UVW", "FLAG", "CORRECTED_DATA"):
            np.testing.assert_array_equal(
                _column(ms_path, column), _column(converted.ms_path, column)
            )
        assert not _hidden_entries(tmpfs_dir, tmp_path / "ms")
    finally:
        shutil.rmtree(tmpfs_dir, ignore_errors=True)


def test_a_failure_mid_write_leaves_nothing_and_a_retry_succeeds(
    files: dict[int, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = MeasurementSetWriter.write_spw

    def failing(self, spw, *args, **kwargs):
        if spw == 5:
            raise RuntimeError("disk on fire")
        return original(self, spw, *args, **kwargs)

    monkeypatch.setattr(MeasurementSetWriter, "write_spw", failing)
    folders = _local(tmp_path)
    ms_path = folders[2] / "group.ms"
    with pytest.raises(RuntimeError, match="disk on fire"):
        convert_group(files, ms_path, tmpfs_dir=folders[0], scratch_dir=folders[1])
    assert not ms_path.exists()
    assert not _hidden_entries(*folders)

    monkeypatch.setattr(MeasurementSetWriter, "write_spw", original)
    result = convert_group(files, ms_path, tmpfs_dir=folders[0], scratch_dir=folders[1])
    assert result.ms_path == ms_path and ms_path.is_dir()
    assert not _hidden_entries(*folders)


def test_a_failure_while_publishing_leaves_nothing(
    files: dict[int, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(src, dst):
        raise OSError("rename refused")

    monkeypatch.setattr(safe_fs, "rename_no_replace", refuse)
    folders = _local(tmp_path)
    ms_path = folders[2] / "group.ms"
    with pytest.raises(OSError, match="rename refused"):
        convert_group(files, ms_path, tmpfs_dir=folders[0], scratch_dir=folders[1])
    assert not ms_path.exists()
    assert not _hidden_entries(*folders)


def test_an_existing_ms_is_kept_unless_overwrite(files: dict[int, Path], tmp_path: Path) -> None:
    shm, scratch, out = _local(tmp_path)
    ms_path = out / "group.ms"
    kwargs = dict(tmpfs_dir=shm, scratch_dir=scratch)
    convert_group(files, ms_path, **kwargs)
    marker = ms_path / "marker"
    marker.write_text("old")
    with pytest.raises(FileExistsError):
        convert_group(files, ms_path, **kwargs)
    assert marker.exists()
    convert_group(files, ms_path, overwrite=True, **kwargs)
    assert not marker.exists() and (ms_path / "table.dat").exists()
    assert not _hidden_entries(shm, scratch, out)


def test_leftovers_of_dead_conversions_are_cleaned_or_restored(
    files: dict[int, Path], tmp_path: Path
) -> None:
    dead = 2**22 + 12345  # above Linux's pid_max: no such process
    out, scratch = tmp_path / "ms", tmp_path / "scratch"
    ms_path = out / "group.ms"
    for folder, kind in ((scratch, "staging"), (out, "partial")):
        (folder / f".group.ms.{kind}-{dead}-abcd").mkdir(parents=True)
    old = out / f".group.ms.old-{dead}-abcd"
    old.mkdir()
    (old / "marker").write_text("previous MS")
    # The interrupted overwrite left no MS in place: the old one comes back, so no overwrite.
    with pytest.raises(FileExistsError):
        convert_group(files, ms_path, tmpfs_dir=None, scratch_dir=scratch)
    assert (ms_path / "marker").read_text() == "previous MS"
    convert_group(files, ms_path, tmpfs_dir=None, scratch_dir=scratch, overwrite=True)
    assert not _hidden_entries(out, scratch)


def test_size_estimate_bounds_the_written_ms(converted: ConversionResult) -> None:
    layout = MainLayout(
        n_spw=16,
        rows_per_spw=N_TIMES * N_ANTENNAS * (N_ANTENNAS + 1) // 2,
        n_chan=N_CHANNELS,
        n_corr=2,
    )
    estimate = estimate_ms_bytes(layout, n_antennas=117, n_fields=N_TIMES)
    assert converted.size_bytes <= estimate <= 1.5 * converted.size_bytes


# -- science -------------------------------------------------------------------------------


def _catalog_source(catalog: Path, name: str) -> dict[str, float]:
    with catalog.open() as fh:
        row = next(r for r in csv.DictReader(fh) if r["name"] == name)
    return {k: float(v) for k, v in row.items() if k != "name"}


def _interpolated_peak(img: np.ndarray, iy: int, ix: int) -> float:
    """Peak of a Gaussian-like blob from its brightest pixel (log-parabola along x and y)."""

    def along(a: float, b: float, c: float) -> float:
        la, lb, lc = np.log([a, b, c])
        offset = (la - lc) / (2.0 * (la - 2.0 * lb + lc))
        return float(np.exp(lb - 0.25 * (la - lc) * offset))

    peak = img[iy, ix]
    gain_x = along(img[iy, ix - 1], peak, img[iy, ix + 1]) / peak
    gain_y = along(img[iy - 1, ix], peak, img[iy + 1, ix]) / peak
    return float(peak * gain_x * gain_y)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")
@pytest.mark.skipif(shutil.which("wsclean") is None, reason="wsclean is not installed")
@pytest.mark.parametrize(
    ("column", "field"),
    [("DATA", N_TIMES // 2), ("CORRECTED_DATA", 4)],
    ids=["DATA-central-field", "CORRECTED_DATA-offset-field"],
)
def test_wsclean_finds_the_calibrator_at_its_catalog_position_and_flux(
    column: str, field: int, converted: ConversionResult, sim, tmp_path: Path
) -> None:
    """End to end: 3C286 appears where the catalog puts it, with the beam-weighted flux.

    One integration's field is imaged (WSClean images one phase centre; each integration has
    its own); the flux is the catalog flux times the Airy primary beam (the dishes point at
    the fringe-stop centre).

    The central field (t12) has the source 9 arcmin from the phase centre; field t4 has it
    22 arcmin away, so a sign error (a mirror image through the phase centre) or a wrong UVW
    frame would miss by tens of pixels.
    """
    ms = converted.ms_path
    source = _catalog_source(sim.catalog_path, "3C286")
    coord = SkyCoord(source["ra_deg"] * u.deg, source["dec_deg"] * u.deg, frame="icrs")
    freqs = _column(ms, "CHAN_FREQ", "SPECTRAL_WINDOW").ravel()
    uvw = _column(ms, "UVW")
    resolution = SPEED_OF_LIGHT_M_S / freqs.max() / np.linalg.norm(uvw, axis=1).max()
    scale = max(0.5, np.floor(np.degrees(resolution) * 3600 / 10 * 2) / 2)  # ~10 px per beam
    centre_dir = _column(ms, "PHASE_DIR", "FIELD")[field, 0]
    centre = SkyCoord(centre_dir[0] * u.rad, centre_dir[1] * u.rad, frame="icrs")
    half = (centre.separation(coord).arcsec + 1500.0) / scale  # 25 arcmin beyond the source
    size = int(2 * np.ceil(half / 32) * 32)
    name = tmp_path / "img"
    cmd = [
        "wsclean", "-quiet", "-reorder", "-no-update-model-required",
        "-size", str(size), str(size), "-scale", f"{scale}asec",
        "-weight", "briggs", "0.5", "-niter", "1000", "-mgain", "0.8", "-auto-threshold", "1",
        "-data-column", column, "-field", str(field),
        "-temp-dir", str(tmp_path), "-name", str(name), str(ms),
    ]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]

    with fits.open(f"{name}-image.fits") as hdul:
        image = hdul[0].data[0, 0]
        wcs = WCS(hdul[0].header).celestial
    iy, ix = np.unravel_index(np.argmax(image), image.shape)
    sx, sy = wcs.world_to_pixel(coord)
    assert np.hypot(ix - sx, iy - sy) <= 1.0, f"peak at {(ix, iy)}, source at {(sx, sy)}"

    # Expected apparent flux: catalog spectrum x Airy beam at the source's offset from the
    # pointing (the fringe-stop centre s0, fixed on Earth) at this field's time, averaged
    # over the channels as multi-frequency synthesis does.
    with h5py.File(sim.groups[0].files[0]) as f:
        dec0 = f["Header/extra_keywords/phase_center_dec"][()]
    lon = np.radians(ARRAY_LON_DEG)
    s0 = np.array([np.cos(dec0) * np.cos(lon), np.cos(dec0) * np.sin(lon), np.sin(dec0)])
    when = Time(_column(ms, "TIME", "FIELD")[field] / 86400.0, format="mjd", scale="utc")
    s = coord.transform_to(ITRS(obstime=when, location=_location())).cartesian.xyz.value
    theta = np.arccos(np.clip(s @ s0 / np.linalg.norm(s), -1, 1))
    spectrum = source["flux_1400_jy"] * (freqs / 1.4e9) ** source["spectral_index"]
    expected = float(np.mean(spectrum * airy_power_beam(theta, freqs)))
    measured = _interpolated_peak(image, iy, ix)
    assert measured == pytest.approx(expected, rel=0.05)


def test_reader_fast_path_and_h5py_fallback_agree(files: dict[int, Path], tmp_path: Path) -> None:
    """The raw chunk reader and HDF5 give the same arrays, channels ascending.

    HDF5 is the reader's fallback for layouts it cannot map, here gzip-compressed data.
    """
    from dsa110_assets.conversion.uvh5_reader import read_header
    from dsa110_assets.conversion.visibility_reader import VisibilityReader

    source = files[9]
    compressed = tmp_path / source.name
    with h5py.File(source) as src, h5py.File(compressed, "w") as dst:
        src.copy("Header", dst)
        for name in ("visdata", "flags", "nsamples"):
            dst.create_dataset(f"Data/{name}", data=src[f"Data/{name}"][()], compression="gzip")
        expected = {name: src[f"Data/{name}"][()][:, 0, ::-1, :] for name in ("visdata", "flags")}
    reader = VisibilityReader()
    fast_header, slow_header = read_header(source), read_header(compressed)
    assert all(m is not None for m in reader.plan(fast_header).maps.values())
    assert all(m is None for m in reader.plan(slow_header).maps.values())
    for header in (fast_header, slow_header):
        buffers = reader.read(header)
        for name, values in expected.items():
            np.testing.assert_array_equal(getattr(buffers, name), values)


def test_flags_and_weights_follow_nsamples_and_bad_values() -> None:
    from dsa110_assets.conversion.blocks import ms_block
    from dsa110_assets.conversion.visibility_reader import SubbandBuffers

    rows, n_chan = 3, 4
    vis = SubbandBuffers(
        np.ones((rows, n_chan, 2), np.complex64),
        np.zeros((rows, n_chan, 2), bool),
        np.ones((rows, n_chan, 2), np.float32),
    )
    vis.nsamples[0, 1, :] = 0.0  # no measurement: flagged, not counted
    vis.nsamples[1, :, :] = 0.5  # half a measurement: half the weight
    vis.visdata[2, 3, 1] = np.nan  # a non-finite value: flagged and zeroed
    vis.flags[2, :, 0] = True  # a fully flagged correlation: zero weight
    unit = np.full(rows, 100.0)
    block = ms_block(vis, unit)
    assert block.flags[0, 1].all() and block.flags[2, 3, 1] and block.data[2, 3, 1] == 0
    assert block.flags.sum() == 2 + 1 + n_chan
    np.testing.assert_allclose(block.weight, [[100, 100], [50, 50], [0, 100]])
    np.testing.assert_allclose(block.sigma, [[0.1, 0.1], [50**-0.5, 50**-0.5], [0.1, 0.1]])


def test_punch_zero_blocks_keeps_content(tmp_path: Path) -> None:
    from dsa110_assets.conversion.ms_writer import punch_zero_blocks

    block = 4 << 20
    content = np.zeros(4 * block, np.uint8)
    content[block + 17] = 1  # only the second block holds data
    path = tmp_path / "model.bin"
    path.write_bytes(content.tobytes())
    punched = punch_zero_blocks(path)
    assert punched in (0, 3 * block)  # 0 where the filesystem cannot punch holes
    assert path.read_bytes() == content.tobytes()
    if punched:
        assert path.stat().st_blocks * 512 <= block + 4096


_KILLED_CHILD = """
import sys
from pathlib import Path
from dsa110_assets.conversion import convert_group
from helpers import hang_mid_write

hang_mid_write(Path(sys.argv[1]), hold_s=120)
files = {int(a.split("=")[0]): Path(a.split("=")[1]) for a in sys.argv[4:]}
convert_group(files, Path(sys.argv[2]), tmpfs_dir=None, scratch_dir=Path(sys.argv[3]))
"""


def test_a_process_killed_mid_write_leaves_no_ms_and_the_retry_succeeds(
    files: dict[int, Path], tmp_path: Path
) -> None:
    """SIGKILL while the MS is half written: nothing appears, and the next run succeeds.

    No cleanup handler can run; the next conversion sweeps the dead process's staging.
    """
    import signal
    import sys
    import time

    scratch, out = tmp_path / "scratch", tmp_path / "ms"
    ms_path, marker = out / "group.ms", tmp_path / "half-written"
    args = [f"{sb}={p}" for sb, p in files.items()]
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_CHILD, str(marker), str(ms_path), str(scratch), *args],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])},
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, "the conversion ended before it was killed"
            assert time.monotonic() < deadline, "the conversion never reached window 5"
            time.sleep(0.05)
        staged = _hidden_entries(scratch)
        assert staged, "the half-written MS should be in staging"
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
    assert not ms_path.exists() and not _hidden_entries(out)
    assert all(p.exists() for p in staged)  # the dead process's leftovers are still there

    result = convert_group(files, ms_path, tmpfs_dir=None, scratch_dir=scratch)
    assert result.ms_path == ms_path
    with _table(ms_path, "SPECTRAL_WINDOW") as t:
        assert t.nrows() == 16
    assert not _hidden_entries(scratch, out), "the retry sweeps the dead process's staging"
