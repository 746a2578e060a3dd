"""Imaging core: rephasing, WSClean, image statistics, primary beam, radiometer, thumbnails.

Three small simulated groups, each converted once per module (no corruptions: calibration is
not part of imaging):

* ``point``: 16 antennas, 4 channels per subband, 3C286 alone, no noise: checks the rephased
  visibilities against an independent point-source model and exercises the WSClean runner.
* ``sky``: 48 antennas, 8 channels, 3C286 plus 40 background sources, thermal noise: the whole
  rephased group is imaged once; positions and primary-beam-corrected fluxes are checked
  against the catalog.
* ``blank``: 32 antennas, 8 channels, no sources, thermal noise: the image noise against the
  radiometer equation.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import ITRS, EarthLocation, SkyCoord
from astropy.io import fits
from astropy.time import Time
from casacore import tables as pt
from PIL import Image

from dsa110_assets.conversion import convert_group
from dsa110_assets.imaging import (
    ImageError,
    RephaseError,
    WSCleanError,
    WSCleanParams,
    choose_image_geometry,
    expected_image_noise,
    find_peak,
    image_statistics,
    make_thumbnail,
    phase_to_common_centre,
    primary_beam_at,
    primary_beam_image,
    run_wsclean,
    thumbnail_markdown,
    write_pb_products,
)
from dsa110_assets.imaging.rephase import IN_PROGRESS_KEYWORD, PHASED_KEYWORD
from dsa110_assets.imaging.wsclean import fft_friendly_size
from dsa110_assets.instrument import (
    ARRAY_HEIGHT_M,
    ARRAY_LAT_DEG,
    ARRAY_LON_DEG,
    SEFD_JY,
    SPEED_OF_LIGHT_M_S,
    airy_power_beam,
    channel_width_hz,
)
from dsa110_assets.naming import parse_subband_filename
from dsa110_assets.simulation import SimulationConfig, simulate_observations
from dsa110_assets.simulation.sky import read_catalog

pytestmark = pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")
needs_wsclean = pytest.mark.skipif(shutil.which("wsclean") is None, reason="no wsclean")

N_TIMES = 24
CENTRE = N_TIMES // 2


def _simulate_and_convert(root: Path, **sim) -> tuple[object, Path]:
    result = simulate_observations(
        SimulationConfig(
            output_dir=root / "incoming",
            truth_dir=root / "truth",
            n_groups=1,
            corruptions=False,
            **sim,
        )
    )
    files = {parse_subband_filename(p.name).subband: p for p in result.groups[0].files}
    ms = root / "ms" / "group.ms"
    convert_group(files, ms, tmpfs_dir=None, scratch_dir=root / "scratch")
    return result, ms


@pytest.fixture(scope="module")
def point(tmp_path_factory: pytest.TempPathFactory):
    """Simulate and convert a noise-free group of 3C286 alone.

    Noise-free group of 3C286 alone (the rephase is checked against one analytic point
    source; the quadrant sky is rephased against pyuvdata's own ``UVData.phase`` in
    ``test_pyuvdata_oracle.py``): (simulation, pristine MS copy, rephased MS).
    """
    root = tmp_path_factory.mktemp("point")
    sim, ms = _simulate_and_convert(
        root,
        n_antennas=16,
        n_channels=4,
        seed=1,
        n_background_sources=0,
        field_sources=False,
        noise=False,
    )
    pristine = root / "pristine.ms"
    shutil.copytree(ms, pristine)
    return sim, pristine, ms


@pytest.fixture(scope="module")
def sky(tmp_path_factory: pytest.TempPathFactory):
    """Noisy 48-antenna group with background sources, rephased and imaged once."""
    root = tmp_path_factory.mktemp("sky")
    sim, ms = _simulate_and_convert(
        root, n_antennas=48, n_channels=8, seed=7, n_background_sources=40, noise=True
    )
    rephase = phase_to_common_centre(ms)
    geometry = choose_image_geometry(ms, pixels_per_beam=3, fov_fwhm_factor=1.5, max_size=2048)
    # Cleaning much deeper than ~DR 500 around 3C286 diverges on these snapshots (see the
    # report); 2000 iterations without the auto-mask stay on the converging side.
    params = WSCleanParams(
        size=geometry.size,
        scale_arcsec=geometry.scale_arcsec,
        niter=2000,
        auto_mask=None,
        data_column="DATA",
        threads=2,
    )
    images = root / "images"
    result = run_wsclean(ms, images, f"group-{rephase.field_name}", params)
    return sim, ms, rephase, geometry, result


@pytest.fixture(scope="module")
def blank(tmp_path_factory: pytest.TempPathFactory):
    """Noise-only group (no calibrator, no sources at all), rephased."""
    root = tmp_path_factory.mktemp("blank")
    sim, ms = _simulate_and_convert(
        root,
        n_antennas=32,
        n_channels=8,
        seed=3,
        calibrator=None,
        n_background_sources=0,
        field_sources=False,
        noise=True,
    )
    phase_to_common_centre(ms)
    return sim, ms


def _col(ms: Path, column: str, sub: str | None = None) -> np.ndarray:
    with pt.table(f"{ms}::{sub}" if sub else str(ms), ack=False) as t:
        return t.getcol(column)


def _point_model_phase(ms: Path, ra_deg: float, dec_deg: float) -> np.ndarray:
    """Arg of S exp(+2 pi i (u l + v m + w (n - 1))) per row and channel (l, m from ICRS)."""
    uvw = _col(ms, "UVW")
    field = _col(ms, "FIELD_ID")
    ddid = _col(ms, "DATA_DESC_ID")
    dirs = _col(ms, "PHASE_DIR", "FIELD")[:, 0, :]
    freqs = _col(ms, "CHAN_FREQ", "SPECTRAL_WINDOW")[
        _col(ms, "SPECTRAL_WINDOW_ID", "DATA_DESCRIPTION")
    ]
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    ra0, dec0 = dirs[field, 0], dirs[field, 1]
    l = np.cos(dec) * np.sin(ra - ra0)  # noqa: E741
    m = np.sin(dec) * np.cos(dec0) - np.cos(dec) * np.sin(dec0) * np.cos(ra - ra0)
    n = np.sqrt(1.0 - l * l - m * m)
    delay = uvw[:, 0] * l + uvw[:, 1] * m + uvw[:, 2] * (n - 1.0)
    return 2.0 * np.pi * freqs[ddid] / SPEED_OF_LIGHT_M_S * delay[:, None]


def _phase_error(ms: Path, source) -> np.ndarray:
    """|arg(DATA / model)| of the cross-correlations, XX (radians)."""
    cross = _col(ms, "ANTENNA1") != _col(ms, "ANTENNA2")
    data = _col(ms, "DATA")[:, :, 0]
    model = _point_model_phase(ms, source.ra_deg, source.dec_deg)
    return np.abs(np.angle(data[cross] * np.exp(-1j * model[cross])))


# -- rephasing ------------------------------------------------------------------------------


def test_rephased_visibilities_match_a_point_source_at_the_new_centre(point) -> None:
    sim, pristine, ms = point
    source = sim.sources[0]
    before = _phase_error(pristine, source)  # each row against its own field: the converter
    assert before.max() < 0.05

    result = phase_to_common_centre(ms)
    assert result.field_id == CENTRE and result.field_name == f"meridian_icrs_t{CENTRE}"
    assert result.n_rows == _col(ms, "UVW").shape[0] and not result.already_phased
    np.testing.assert_array_equal(_col(ms, "FIELD_ID"), CENTRE)

    after = _phase_error(ms, source)
    assert after.max() < 0.02, after.max()
    # The rows that moved really changed: against the old UVW and the new centre they miss.
    with pt.table(str(pristine), ack=False) as t:
        moved = t.getcol("FIELD_ID") != CENTRE
    assert moved.sum() > 0.9 * moved.size
    np.testing.assert_allclose(
        np.linalg.norm(_col(ms, "UVW"), axis=1),
        np.linalg.norm(_col(pristine, "UVW"), axis=1),
        atol=1e-6,
    )
    assert not np.allclose(_col(ms, "UVW")[moved], _col(pristine, "UVW")[moved], atol=1.0)
    # Amplitudes unchanged; FIELD table (the pointing record) unchanged; CORRECTED follows.
    np.testing.assert_allclose(np.abs(_col(ms, "DATA")), np.abs(_col(pristine, "DATA")), 1e-5)
    np.testing.assert_array_equal(_col(ms, "CORRECTED_DATA"), _col(ms, "DATA"))
    np.testing.assert_array_equal(
        _col(ms, "PHASE_DIR", "FIELD"), _col(pristine, "PHASE_DIR", "FIELD")
    )
    with pt.table(str(ms), ack=False) as t:
        assert "MODEL_DATA" not in t.colnames()  # the converter writes none; rephase adds none
    with pt.table(str(ms), ack=False) as t:
        assert t.getkeyword(PHASED_KEYWORD) == CENTRE
        assert IN_PROGRESS_KEYWORD not in t.getkeywords()


def test_rephasing_is_idempotent_and_refuses_an_interrupted_ms(point, tmp_path: Path) -> None:
    sim, pristine, _ = point
    ms = tmp_path / "copy.ms"
    shutil.copytree(pristine, ms)
    first = phase_to_common_centre(ms, 5)
    data = _col(ms, "DATA")
    again = phase_to_common_centre(ms, 5)
    assert again.already_phased and again.n_rows == 0
    np.testing.assert_array_equal(_col(ms, "DATA"), data)
    assert first.ra_deg == pytest.approx(np.degrees(_col(ms, "PHASE_DIR", "FIELD")[5, 0, 0]))
    # Moving on to another field rotates from the current common centre correctly.
    phase_to_common_centre(ms, CENTRE)
    assert _phase_error(ms, sim.sources[0]).max() < 0.03
    with pt.table(str(ms), readonly=False, ack=False) as t:
        t.putkeyword(IN_PROGRESS_KEYWORD, 3)
    with pytest.raises(RephaseError, match="interrupted"):
        phase_to_common_centre(ms, 3)
    with pytest.raises(RephaseError, match="outside"):
        phase_to_common_centre(pristine, 99)
    with pytest.raises(RephaseError, match="not a Measurement Set"):
        phase_to_common_centre(tmp_path / "nothing.ms")


# -- geometry and the WSClean runner ---------------------------------------------------------


def test_image_geometry_follows_the_baselines_and_the_beam(sky) -> None:
    _, ms, _, geometry, _ = sky
    uvw = _col(ms, "UVW")
    freqs = _col(ms, "CHAN_FREQ", "SPECTRAL_WINDOW")
    max_uv = np.hypot(uvw[:, 0], uvw[:, 1]).max()
    resolution = np.degrees(SPEED_OF_LIGHT_M_S / freqs.max() / max_uv) * 3600
    assert geometry.resolution_arcsec == pytest.approx(resolution)
    assert resolution / 3 - 0.1 < geometry.scale_arcsec <= resolution / 3
    fwhm = np.degrees(1.029 * SPEED_OF_LIGHT_M_S / freqs.min() / 4.65)
    assert geometry.primary_beam_fwhm_deg == pytest.approx(fwhm)
    wanted = 1.5 * fwhm * 3600 / geometry.scale_arcsec
    assert fft_friendly_size(wanted) > 2048 and geometry.capped and geometry.size == 2048
    small = choose_image_geometry(ms, pixels_per_beam=2, fov_deg=1.0)
    assert not small.capped and small.size == fft_friendly_size(3600 / small.scale_arcsec)
    assert small.fov_deg == pytest.approx(small.size * small.scale_arcsec / 3600)
    assert [fft_friendly_size(n) for n in (1, 7, 97, 1001, 4095)] == [2, 8, 100, 1024, 4096]


@needs_wsclean
def test_wsclean_failures_raise_with_the_log_tail_and_leave_nothing(point, tmp_path: Path) -> None:
    _, pristine, _ = point
    out = tmp_path / "images"
    params = WSCleanParams(size=64, scale_arcsec=30, niter=0, extra_args=("-no-such-option",))
    with pytest.raises(WSCleanError) as err:
        run_wsclean(pristine, out, "bad", params)
    assert err.value.returncode not in (0, None)
    assert "return code" in str(err.value) and "no-such-option" in err.value.log_tail
    assert list(out.iterdir()) == []
    good = WSCleanParams(size=64, scale_arcsec=30, niter=0)
    with pytest.raises(WSCleanError, match="return code"):
        run_wsclean(tmp_path / "missing.ms", out, "missing", good)
    assert list(out.iterdir()) == []
    with pytest.raises(WSCleanError, match="not found"):
        run_wsclean(pristine, out, "x", good, wsclean_bin="no-such-wsclean-binary")


@needs_wsclean
def test_wsclean_products_are_published_and_replaced_atomically(point, tmp_path: Path) -> None:
    _, pristine, _ = point
    out = tmp_path / "images"
    params = WSCleanParams(size=64, scale_arcsec=30, niter=10, field=CENTRE, data_column="DATA")
    first = run_wsclean(pristine, out, "img", params)
    assert first.image == out / "img-image.fits" and first.psf == out / "img-psf.fits"
    assert first.residual and first.model and first.dirty
    assert "-field" in first.command and str(CENTRE) in first.command
    assert "-no-update-model-required" in first.command
    inode = first.image.stat().st_ino
    dirty = WSCleanParams(size=64, scale_arcsec=30, niter=0, field=CENTRE, data_column="DATA")
    second = run_wsclean(pristine, out, "img", dirty)
    assert second.image.stat().st_ino != inode  # a new file renamed over the old one
    assert second.model is None and not (out / "img-model.fits").exists()  # stale: removed
    assert sorted(p.name for p in out.iterdir()) == ["img-dirty.fits", "img-image.fits"]
    with pt.table(str(pristine), ack=False) as t:
        assert "MODEL_DATA" not in t.colnames()  # -no-update-model-required


# -- the science: one image of the whole rephased group ---------------------------------------


def _catalog(sim) -> list:
    return read_catalog(sim.catalog_path)


@needs_wsclean
def test_sources_sit_at_catalog_positions_with_catalog_fluxes(sky) -> None:
    sim, ms, rephase, geometry, result = sky
    stats = image_statistics(result.image)
    pb = primary_beam_image(ms, result.image)
    _, pbcor = write_pb_products(result.image, pb)
    with fits.open(result.image) as hdul:
        ref_freq = float(hdul[0].header["CRVAL3"])
    checked = []
    for src in _catalog(sim):
        beam = primary_beam_at(ms, src.ra_deg, src.dec_deg)
        apparent = float(src.flux_jy(ref_freq)) * beam
        snr = apparent / stats.noise_jy
        if beam < 0.2 or snr < 50:
            continue
        try:
            ra, dec, peak, offset = find_peak(
                pbcor, src.ra_deg, src.dec_deg, 3 * geometry.scale_arcsec
            )
        except ImageError:
            continue  # outside the image
        checked.append(src.name)
        assert offset <= geometry.scale_arcsec, f"{src.name} off by {offset:.1f} arcsec"
        # 5% where the beam is flat enough; further out the channel-mean beam misses the
        # imaging weights' tilt towards high frequencies (see the report): 10%.
        # Added in quadrature: 4 sigma of the image noise (the residual rms, which holds the
        # sidelobes of the drifting bright sources WSClean cannot model exactly).
        tolerance = np.hypot(0.05 if beam >= 0.5 else 0.10, 4 / snr)
        assert peak == pytest.approx(float(src.flux_jy(ref_freq)), rel=tolerance), src.name
    assert "3C286" in checked and len(checked) >= 5, checked
    # the quadrant pattern is among them, off centre on every side
    assert sum(name.startswith("FLD0_") for name in checked) >= 4, checked


@needs_wsclean
def test_image_statistics_describe_the_image(sky) -> None:
    _, ms, rephase, geometry, result = sky
    stats = image_statistics(result.image)
    residual = image_statistics(result.residual)
    assert (stats.nx, stats.ny) == (geometry.size, geometry.size)
    assert stats.cell_arcsec == pytest.approx(geometry.scale_arcsec)
    assert stats.centre_ra_deg == pytest.approx(rephase.ra_deg, abs=1e-6)
    assert stats.centre_dec_deg == pytest.approx(rephase.dec_deg, abs=1e-6)
    freqs = _col(ms, "CHAN_FREQ", "SPECTRAL_WINDOW")
    assert stats.ref_freq_hz == pytest.approx(freqs.mean(), rel=1e-3)
    assert stats.bandwidth_hz == pytest.approx(16 * 11.71875e6, rel=1e-3)
    with fits.open(result.image) as hdul:
        h = hdul[0].header
        assert stats.beam_major_arcsec == pytest.approx(h["BMAJ"] * 3600)
        assert stats.beam_minor_arcsec == pytest.approx(h["BMIN"] * 3600)
        assert stats.beam_pa_deg == pytest.approx(h["BPA"])
        data = hdul[0].data[0, 0]
    assert stats.peak_jy == pytest.approx(float(data.max()))
    assert stats.noise_jy == pytest.approx(residual.noise_jy, rel=0.1)
    assert stats.dynamic_range == pytest.approx(stats.peak_jy / stats.noise_jy)
    assert stats.nan_count == 0 and not stats.all_zero
    # The peak is 3C286.
    cal = SkyCoord(202.7845337 * u.deg, 30.5091553 * u.deg)
    assert (
        cal.separation(SkyCoord(stats.peak_ra_deg * u.deg, stats.peak_dec_deg * u.deg)).arcsec
        < 1.5 * stats.cell_arcsec
    )


def test_robust_noise_ignores_sources_and_nans(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(0.0, 0.01, (256, 256))
    data[100:104, 50:54] = 5.0  # a source
    data[:10] = np.nan
    path = tmp_path / "synthetic-image.fits"
    header = fits.Header()
    header.update(
        CTYPE1="RA---SIN", CTYPE2="DEC--SIN", CRVAL1=10.0, CRVAL2=30.0, CRPIX1=129, CRPIX2=129,
        CDELT1=-1 / 360, CDELT2=1 / 360, CUNIT1="deg", CUNIT2="deg",
    )  # fmt: skip
    fits.PrimaryHDU(data, header).writeto(path)
    stats = image_statistics(path)
    assert stats.noise_jy == pytest.approx(0.01, rel=0.05)
    assert stats.nan_count == 2560 and stats.peak_jy == 5.0 and stats.beam_major_arcsec is None
    assert stats.cell_arcsec == pytest.approx(10.0)
    # Sub-pixel peak of a Gaussian placed between pixels, with an elliptical rotated beam.
    yy, xx = np.mgrid[0:256, 0:256]
    x0, y0, a, b, th = 140.3, 120.6, 3.0, 1.8, 0.5
    xr = (xx - x0) * np.cos(th) + (yy - y0) * np.sin(th)
    yr = -(xx - x0) * np.sin(th) + (yy - y0) * np.cos(th)
    blob = 2.5 * np.exp(-0.5 * ((xr / a) ** 2 + (yr / b) ** 2))
    path2 = tmp_path / "blob-image.fits"
    fits.PrimaryHDU(blob, header).writeto(path2)
    from astropy.wcs import WCS

    ra, dec = WCS(header).pixel_to_world_values(x0, y0)
    fra, fdec, peak, offset = find_peak(path2, float(ra), float(dec), 60)
    assert peak == pytest.approx(2.5, rel=1e-6) and offset < 0.01


@pytest.mark.filterwarnings("ignore::astropy.utils.exceptions.AstropyUserWarning")
def test_corrupt_or_missing_fits_raise_image_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad-image.fits"
    bad.write_bytes(b"SIMPLE  =                    T" + b"\0" * 100)
    with pytest.raises(ImageError, match="bad-image.fits"):
        image_statistics(bad)
    good = tmp_path / "good-image.fits"
    fits.PrimaryHDU(np.zeros((4, 4))).writeto(good)
    truncated = tmp_path / "cut-image.fits"
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(ImageError, match="cut-image.fits"):
        image_statistics(truncated)
    with pytest.raises(ImageError, match="no such file"):
        find_peak(tmp_path / "absent.fits", 0, 0, 10)
    with pytest.raises(ImageError, match="celestial"):
        image_statistics(good)  # no WCS


# -- the effective primary beam --------------------------------------------------------------


def test_effective_beam_is_the_time_and_channel_mean_of_the_airy_beam(point) -> None:
    """Check the effective beam against the time and channel mean of the Airy beam.

    Independent check: theta from the ITRS pointing s0 at every integration, as the
    simulator computes it (astropy's full ICRS -> ITRS transform).
    """
    sim, pristine, _ = point
    location = EarthLocation.from_geodetic(
        ARRAY_LON_DEG * u.deg, ARRAY_LAT_DEG * u.deg, ARRAY_HEIGHT_M * u.m
    )
    with pt.table(str(pristine), ack=False) as t:
        dec0 = t.getkeyword("DSA110_FRINGE_STOP_DEC_RAD")
    lon = np.radians(ARRAY_LON_DEG)
    s0 = np.array([np.cos(dec0) * np.cos(lon), np.cos(dec0) * np.sin(lon), np.sin(dec0)])
    times = Time(_col(pristine, "TIME", "FIELD") / 86400.0, format="mjd", scale="utc")
    freqs = _col(pristine, "CHAN_FREQ", "SPECTRAL_WINDOW").ravel()
    for ra, dec in [(202.7845337, 30.5091553), (204.0, 31.5), (201.0, 29.0)]:
        coord = SkyCoord(ra * u.deg, dec * u.deg)
        s = coord.transform_to(ITRS(obstime=times, location=location)).cartesian.xyz.value.T
        theta = np.arccos(np.clip(s @ s0 / np.linalg.norm(s, axis=1), -1, 1))
        expected = airy_power_beam(theta[:, None], freqs[None, :]).mean()
        # Aberration scales angles by ~1e-4 (ignored by the beam, exact in astropy): at the
        # beam's steep flank 2 deg out that is a few 1e-4 of the value.
        assert primary_beam_at(pristine, ra, dec) == pytest.approx(expected, rel=1e-3)


@needs_wsclean
def test_pb_products_divide_by_the_beam_above_the_cutoff(sky) -> None:
    _, ms, _, _, result = sky
    pb = primary_beam_image(ms, result.image)
    stats = image_statistics(result.image)
    assert pb.shape == (stats.ny, stats.nx)
    assert 0.9 < np.nanmax(pb) <= 1.0 and np.nanmin(pb) < 0.2
    pb_path, pbcor_path = write_pb_products(result.image, pb, cutoff=0.3)
    assert pb_path.name.endswith("-pb.fits") and pbcor_path.name.endswith("-image-pb.fits")
    image = fits.getdata(result.image)[0, 0]
    beam = fits.getdata(pb_path)[0, 0]
    corrected = fits.getdata(pbcor_path)[0, 0]
    keep = pb >= 0.3
    assert np.isnan(corrected[~keep]).all() and np.isnan(beam[~keep]).all()
    np.testing.assert_allclose(corrected[keep], image[keep] / pb[keep], rtol=1e-5, atol=1e-7)
    # Spot check the spline-interpolated grid against the exact beam at a few pixels.
    from dsa110_assets.imaging.image_stats import read_image

    wcs = read_image(result.image).wcs
    for y, x in [(0, 0), (17, 1203), (1000, 1000), (pb.shape[0] - 1, 5)]:
        ra, dec = wcs.pixel_to_world_values(x, y)
        assert pb[y, x] == pytest.approx(primary_beam_at(ms, float(ra), float(dec)), abs=1e-4)
    assert not [p for p in pb_path.parent.iterdir() if p.name.startswith(".")]


# -- radiometer ----------------------------------------------------------------------------


def test_natural_noise_is_the_radiometer_equation(blank) -> None:
    _, ms = blank
    n_ant, n_chan = 32, 16 * 8
    dnu, tau = channel_width_hz(8), float(_col(ms, "EXPOSURE")[0])
    expected = SEFD_JY / np.sqrt(2 * 2 * (n_ant * (n_ant - 1) // 2) * n_chan * N_TIMES * dnu * tau)
    assert expected_image_noise(ms, weighting="natural") == pytest.approx(expected, rel=1e-6)
    briggs = expected_image_noise(ms, image_size=512, scale_arcsec=20.0)
    assert 1.0 < briggs / expected < 1.6
    with pytest.raises(ValueError, match="weighting"):
        expected_image_noise(ms, weighting="robust")


@needs_wsclean
@pytest.mark.parametrize("weighting", ["natural", "briggs 0.5"])
def test_image_noise_is_within_2x_of_the_radiometer_equation(
    blank, weighting, tmp_path: Path
) -> None:
    _, ms = blank
    params = WSCleanParams(
        size=512, scale_arcsec=20.0, weight=weighting, niter=0, data_column="DATA"
    )
    result = run_wsclean(ms, tmp_path, "noise", params)
    measured = image_statistics(result.image).noise_jy
    expected = expected_image_noise(
        ms, data_column="DATA", weighting=weighting, image_size=512, scale_arcsec=20.0
    )
    assert 0.5 < measured / expected < 2.0, (measured, expected)
    assert measured / expected == pytest.approx(1.0, rel=0.25)


# -- thumbnails ----------------------------------------------------------------------------


@needs_wsclean
def test_thumbnails_are_deterministic_oriented_pngs(sky, tmp_path: Path) -> None:
    _, _, _, _, result = sky
    first = make_thumbnail(result.image, tmp_path / "a.png", size=256)
    second = make_thumbnail(result.image, tmp_path / "b.png", size=256)
    assert first.read_bytes() == second.read_bytes()
    with Image.open(first) as png:
        assert png.format == "PNG" and png.size == (256, 256) and png.mode == "L"
        pixels = np.asarray(png)
    # 3C286 lies south (lower Dec) and slightly west (lower RA) of the phase centre: with north
    # up and east left it must be drawn below and to the right of the middle.
    iy, ix = np.unravel_index(np.argmax(pixels), pixels.shape)
    assert iy > 128 and ix > 128, (iy, ix)
    pct = make_thumbnail(result.image, tmp_path / "p.png", size=128, stretch="percentile")
    assert pct.read_bytes() != first.read_bytes()
    markdown = thumbnail_markdown(first, max_px=128)
    assert markdown.startswith("![a](data:image/png;base64,") and len(markdown) < 100_000
    with pytest.raises(ValueError, match="stretch"):
        make_thumbnail(result.image, tmp_path / "x.png", stretch="log")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png", "p.png"]


def test_thumbnail_of_an_all_nan_image_is_black(tmp_path: Path) -> None:
    header = fits.Header()
    header.update(CTYPE1="RA---SIN", CTYPE2="DEC--SIN", CDELT1=-0.01, CDELT2=0.01)
    path = tmp_path / "nan-image.fits"
    fits.PrimaryHDU(np.full((20, 30), np.nan), header).writeto(path)
    png = make_thumbnail(path, tmp_path / "nan.png", size=64)
    with Image.open(io.BytesIO(png.read_bytes())) as image:
        assert image.size == (30, 20) and not np.asarray(image).any()
    assert os.path.getsize(png) > 0
