"""Daily mosaics: grid, primary-beam-weighted combination, skipping, atomic products.

Inputs are simulated WSClean-like snapshots along a declination strip (consecutive groups,
1.25 deg apart in RA), with sources of known true flux, beam-correlated noise and the Airy
primary beam applied; the mosaic must give the true fluxes back and the noise predicted by
its weights.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits

from dsa110_assets.imaging.image_stats import find_peak, read_image
from dsa110_assets.instrument import airy_power_beam
from dsa110_assets.mosaics import (
    GridError,
    MosaicError,
    analytic_primary_beam,
    build_mosaic,
    dec_strip_of,
    group_by_ra_tile,
    mosaic_grid,
    pb_sibling,
    write_simulated_image,
)

DEC = 40.0
SIZE = 200
CELL = 80.0  # arcsec: 4.4 deg images, about WSClean's 2 x primary-beam FWHM
BEAM = 320.0  # arcsec: 4 pixels per beam
NOISE = 0.005
FREQ = 1.405e9
STEP = 1.25  # deg of RA between consecutive 5-minute groups
STRIP_SOURCES = [  # (ra, dec, true flux): in overlaps of two to four images
    (101.875, 40.0, 1.0),
    (102.5, 40.6, 0.5),
    (103.1, 39.5, 0.8),
    (100.3, 41.0, 0.3),
]
WRAP_SOURCES = [(359.4, 40.2, 1.0), (0.0, 39.7, 0.6), (0.6, 40.5, 0.4)]


def _strip(folder: Path, ras, sources, *, with_pb: bool, seed0: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, ra in enumerate(ras):
        image = folder / f"2026-01-01T00:{k:02d}:00-meridian-image.fits"
        write_simulated_image(
            image,
            ra_deg=ra,
            dec_deg=DEC,
            size=SIZE,
            cell_arcsec=CELL,
            freq_hz=FREQ,
            sources=sources,
            noise_jy=NOISE,
            beam_arcsec=BEAM,
            seed=seed0 + k,
            pb_path=pb_sibling(image) if with_pb else None,
            date_obs=f"2026-01-01T00:{5 * k:02d}:00",
        )
        paths.append(image)
    return paths


@pytest.fixture(scope="module")
def strip(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    ras = [100.0 + STEP * k for k in range(5)]
    return _strip(tmp_path_factory.mktemp("strip"), ras, STRIP_SOURCES, with_pb=True)


@pytest.fixture(scope="module")
def strip_mosaic(strip: list[Path], tmp_path_factory: pytest.TempPathFactory):
    return build_mosaic(strip, tmp_path_factory.mktemp("out") / "strip-mosaic.fits")


def _sky(path: Path):
    img = read_image(path)
    yy, xx = np.mgrid[0 : img.data.shape[0], 0 : img.data.shape[1]]
    ra, dec = img.wcs.pixel_to_world_values(xx, yy)
    return img.data, ra, dec


def _distance_deg(ra, dec, ra0, dec0):
    r, d, r0, d0 = np.radians(ra), np.radians(dec), math.radians(ra0), math.radians(dec0)
    cos_t = np.sin(d) * np.sin(d0) + np.cos(d) * np.cos(d0) * np.cos(r - r0)
    return np.degrees(np.arccos(np.clip(cos_t, -1, 1)))


def _check_fluxes(mosaic: Path, sources, tol: float = 0.05) -> list[float]:
    errors = []
    for ra, dec, flux in sources:
        _, _, peak, offset = find_peak(mosaic, ra, dec, 2 * BEAM)
        assert offset < CELL, f"source at ({ra}, {dec}) found {offset:.0f} arcsec away"
        errors.append(peak / flux - 1)
    assert max(abs(e) for e in errors) < tol, errors
    return errors


# --- the simulated inputs ---------------------------------------------------------------------


def test_simulated_image_is_wsclean_like_with_beam_attenuated_sources(tmp_path: Path) -> None:
    image, pb = write_simulated_image(
        tmp_path / "x-image.fits", ra_deg=10.0, dec_deg=DEC, size=SIZE, cell_arcsec=CELL,
        sources=[(10.0, DEC, 2.0), (11.2, DEC + 0.3, 1.0)], beam_arcsec=BEAM, seed=1,
        pb_path=tmp_path / "x-pb.fits",
    )  # fmt: skip
    header = fits.getheader(image)
    assert header["NAXIS"] == 4 and header["CTYPE1"] == "RA---SIN"
    assert header["CRPIX1"] == SIZE / 2 + 1 and header["BUNIT"] == "JY/BEAM"
    assert header["BMAJ"] == pytest.approx(BEAM / 3600)
    # noiseless: the peak is the true flux times the Airy beam at that distance
    theta = SkyCoord(10 * u.deg, DEC * u.deg).separation(
        SkyCoord(11.2 * u.deg, (DEC + 0.3) * u.deg)
    )
    expected = 1.0 * float(airy_power_beam(theta.rad, FREQ))
    assert expected < 0.8  # really attenuated
    assert find_peak(image, 11.2, DEC + 0.3, BEAM)[2] == pytest.approx(expected, rel=2e-3)
    assert find_peak(image, 10.0, DEC, BEAM)[2] == pytest.approx(2.0, rel=2e-3)
    beam = read_image(pb).data
    assert np.nanmin(beam) >= 0.2 and np.isnan(beam).any()  # NaN below the cutoff


def test_simulated_noise_is_uniform_and_at_the_requested_rms(tmp_path: Path) -> None:
    image, _ = write_simulated_image(
        tmp_path / "n-image.fits", ra_deg=0, dec_deg=DEC, size=256, cell_arcsec=CELL,
        noise_jy=0.01, beam_arcsec=BEAM, seed=3,
    )  # fmt: skip
    data = read_image(image).data
    assert data.std() == pytest.approx(0.01, rel=1e-3)
    # correlated on the beam scale: neighbours are alike, pixels a few beams apart are not
    assert np.corrcoef(data[:, :-1].ravel(), data[:, 1:].ravel())[0, 1] > 0.7
    assert abs(np.corrcoef(data[:, :-16].ravel(), data[:, 16:].ravel())[0, 1]) < 0.1


def test_analytic_beam_is_airy_at_the_angular_distance_from_the_phase_centre(
    tmp_path: Path,
) -> None:
    image, _ = write_simulated_image(
        tmp_path / "b-image.fits", ra_deg=350.0, dec_deg=60.0, size=SIZE, cell_arcsec=CELL
    )
    img = read_image(image)
    beam = analytic_primary_beam(img.wcs, img.data.shape, FREQ)
    rng = np.random.default_rng(0)
    ys, xs = rng.integers(0, SIZE, 20), rng.integers(0, SIZE, 20)
    ra, dec = img.wcs.pixel_to_world_values(xs, ys)
    theta = SkyCoord(350 * u.deg, 60 * u.deg).separation(SkyCoord(ra * u.deg, dec * u.deg))
    np.testing.assert_allclose(beam[ys, xs], airy_power_beam(theta.rad, FREQ), rtol=1e-9)
    assert beam[SIZE // 2, SIZE // 2] == pytest.approx(1.0)


# --- the grid ---------------------------------------------------------------------------------


def test_grid_covers_the_strip_at_the_finest_cell(strip: list[Path], tmp_path: Path) -> None:
    coarse, _ = write_simulated_image(
        tmp_path / "c-image.fits", ra_deg=102.5, dec_deg=DEC, size=100, cell_arcsec=2 * CELL
    )
    grid = mosaic_grid([*strip, coarse], pad_deg=0.5)
    assert grid.cell_arcsec == pytest.approx(CELL)
    assert grid.wcs.wcs.ctype[0] == "RA---TAN"
    assert grid.centre_ra_deg == pytest.approx(102.5) and grid.centre_dec_deg == pytest.approx(DEC)
    ny, nx = grid.shape
    for path in strip:  # every image corner is inside, with the pad to spare
        img = read_image(path)
        for x, y in [(0, 0), (SIZE - 1, 0), (0, SIZE - 1), (SIZE - 1, SIZE - 1)]:
            ra, dec = img.wcs.pixel_to_world_values(x, y)
            gx, gy = grid.wcs.world_to_pixel_values(ra, dec)
            pad = 0.5 * 3600 / CELL
            assert pad - 1 <= gx <= nx - pad and pad - 1 <= gy <= ny - pad
    assert grid_size_ok(grid.shape)
    assert mosaic_grid(strip, cell_arcsec=40.0).shape[1] == pytest.approx(2 * nx, rel=0.01)


def grid_size_ok(shape: tuple[int, int]) -> bool:
    # 4 steps of 1.25 cos(40) deg + one 4.4 deg image + 2 x 0.5 deg pad, at 80"
    expected_nx = (4 * STEP * math.cos(math.radians(DEC)) + SIZE * CELL / 3600 + 1.0) * 3600 / CELL
    return abs(shape[1] - expected_nx) < 0.05 * expected_nx and shape[0] < shape[1]


def test_grid_refuses_a_strip_too_wide_for_tan_and_too_many_pixels(
    strip: list[Path], tmp_path: Path
) -> None:
    far, _ = write_simulated_image(
        tmp_path / "far-image.fits", ra_deg=220.0, dec_deg=DEC, size=SIZE, cell_arcsec=CELL
    )
    with pytest.raises(GridError, match="RA tiles"):
        mosaic_grid([*strip, far])
    day = [  # a whole day of RA: no mean direction, and TAN could not hold it anyway
        write_simulated_image(
            tmp_path / f"d{ra}-image.fits", ra_deg=ra, dec_deg=DEC, size=16, cell_arcsec=CELL
        )[0]
        for ra in (0, 90, 180, 270)
    ]
    with pytest.raises(GridError, match="RA tiles"):
        mosaic_grid(day)
    with pytest.raises(GridError, match="limit 2000"):
        mosaic_grid(strip, cell_arcsec=5.0, max_pixels=2000)
    with pytest.raises(GridError):
        mosaic_grid([])


def test_dec_strip_and_ra_tiles(strip: list[Path], tmp_path: Path) -> None:
    assert dec_strip_of(strip) == 40.0
    off, _ = write_simulated_image(
        tmp_path / "o-image.fits", ra_deg=100, dec_deg=40.36, size=16, cell_arcsec=CELL
    )
    assert dec_strip_of([strip[0], off]) == 40.2  # mean 40.18
    other, _ = write_simulated_image(
        tmp_path / "p-image.fits", ra_deg=100, dec_deg=55.0, size=16, cell_arcsec=CELL
    )
    with pytest.raises(GridError, match="not one strip"):
        dec_strip_of([strip[0], other])
    tiles = group_by_ra_tile(["a", "b", "c", "d"], [359.9, 0.1, 14.9, 15.0], tile_deg=15.0)
    assert tiles == {0: [Path("b"), Path("c")], 1: [Path("d")], 23: [Path("a")]}


# --- the mosaic -------------------------------------------------------------------------------


def test_sources_in_the_overlaps_come_back_at_their_true_flux(strip_mosaic) -> None:
    assert strip_mosaic.n_images == 5 and strip_mosaic.skipped == ()
    errors = _check_fluxes(strip_mosaic.path, STRIP_SOURCES)
    assert max(abs(e) for e in errors) < 0.02  # measured: < 0.5%


def test_mosaic_header_effnoise_and_weights(strip_mosaic, strip: list[Path]) -> None:
    header = fits.getheader(strip_mosaic.path)
    weights = read_image(strip_mosaic.weights_path).data
    covered = weights > 0
    assert header["BUNIT"] == "JY/BEAM" and header["NIMAGES"] == 5
    assert header["BMAJ"] == pytest.approx(BEAM / 3600) and header["CTYPE1"] == "RA---TAN"
    assert header["EFFNOISE"] == pytest.approx(np.median(1 / np.sqrt(weights[covered])), rel=1e-5)
    assert header["EFFNOISE"] == pytest.approx(strip_mosaic.effective_noise_jy)
    history = "\n".join(str(h) for h in header["HISTORY"])
    assert all(p.name in history.replace("\n", "") for p in strip)
    mosaic = read_image(strip_mosaic.path).data
    assert np.array_equal(np.isfinite(mosaic), covered)
    assert strip_mosaic.start_mjd == pytest.approx(61041.0)  # 2026-01-01T00:00
    assert (strip_mosaic.end_mjd - strip_mosaic.start_mjd) * 1440 == pytest.approx(20.0)


def test_mosaic_noise_is_what_the_weights_predict(strip_mosaic) -> None:
    mosaic, ra, dec = _sky(strip_mosaic.path)
    weights = read_image(strip_mosaic.weights_path).data
    source_free = np.isfinite(mosaic)
    noise_map = 1 / np.sqrt(np.where(source_free, weights, np.nan))
    for sra, sdec, _ in STRIP_SOURCES:
        source_free &= _distance_deg(ra, dec, sra, sdec) > 0.5
    z = mosaic[source_free] / noise_map[source_free]
    assert z.size > 20000
    assert z.std() == pytest.approx(1.0, abs=0.08)  # measured 0.994
    assert abs(z.mean()) < 0.05


def test_overlap_noise_beats_a_single_image_as_sqrt_sum_of_beams(
    strip_mosaic, strip: list[Path], tmp_path: Path
) -> None:
    """Half-way between groups 1 and 2: each contributes pb^2 / s^2 to the inverse variance."""
    single = build_mosaic([strip[1]], tmp_path / "single.fits")
    mid_ra = 100.0 + 1.5 * STEP
    beams = [
        float(airy_power_beam(math.radians(_distance_deg(mid_ra, DEC, 100 + STEP * k, DEC)), FREQ))
        for k in range(5)
    ]
    expected = math.sqrt(sum(b * b for b in beams)) / beams[1]  # ~1.7
    ratios = []
    for result in (single, strip_mosaic):
        img = read_image(result.weights_path)
        x, y = (int(round(float(v))) for v in img.wcs.world_to_pixel_values(mid_ra, DEC))
        ratios.append(1 / math.sqrt(img.data[y, x]))
    assert ratios[0] / ratios[1] == pytest.approx(expected, rel=0.03)
    # and the single image's own noise there is the image rms over its beam
    assert ratios[0] == pytest.approx(NOISE / beams[1], rel=0.03)


def test_noise_drops_as_sqrt_n_for_repeated_pointings(tmp_path: Path) -> None:
    paths = _strip(tmp_path / "rep", [50.0] * 4, [], with_pb=True, seed0=100)
    one = build_mosaic(paths[:1], tmp_path / "one.fits")
    four = build_mosaic(paths, tmp_path / "four.fits")
    m1, ra, dec = _sky(one.path)
    m4 = read_image(four.path).data
    inner = np.isfinite(m1) & np.isfinite(m4) & (_distance_deg(ra, dec, 50.0, DEC) < 1.5)
    assert m1[inner].std() / m4[inner].std() == pytest.approx(2.0, rel=0.1)
    assert one.effective_noise_jy / four.effective_noise_jy == pytest.approx(2.0, rel=0.01)


def test_without_pb_files_the_analytic_beam_is_used(tmp_path: Path) -> None:
    ras = [100.0 + STEP * k for k in range(5)]
    paths = _strip(tmp_path / "nopb", ras, STRIP_SOURCES, with_pb=False)
    assert not any(pb_sibling(p).exists() for p in paths)
    result = build_mosaic(paths, tmp_path / "nopb.fits")
    assert result.n_images == 5
    _check_fluxes(result.path, STRIP_SOURCES)


def test_beam_for_overrides_the_beam_and_noise_can_be_given(
    strip: list[Path], tmp_path: Path
) -> None:
    """A beam twice too large halves every corrected flux; a given noise sets the weights."""

    def doubled(path: Path) -> np.ndarray:
        return 2 * read_image(pb_sibling(path)).data

    result = build_mosaic(strip, tmp_path / "half.fits", beam_for=doubled, pb_cutoff=0.4)
    _, _, peak, _ = find_peak(result.path, *STRIP_SOURCES[0][:2], 2 * BEAM)
    assert peak == pytest.approx(0.5, rel=0.02)
    given = build_mosaic(strip, tmp_path / "given.fits", noise_jy={p: 0.1 for p in strip})
    weights = read_image(given.weights_path).data
    assert np.nanmax(weights) <= 5 * 100.0 and np.nanmax(weights) > 100.0  # sum pb^2 / 0.1^2


def test_ra_wraparound_across_zero_hours(tmp_path: Path) -> None:
    ras = [(357.5 + STEP * k) % 360 for k in range(5)]  # 357.5 ... 2.5
    paths = _strip(tmp_path / "wrap", ras, WRAP_SOURCES, with_pb=True)
    result = build_mosaic(paths, tmp_path / "wrap.fits")
    assert min(result.centre_ra_deg, 360 - result.centre_ra_deg) < 0.01
    assert grid_size_ok(result.shape)  # the same compact strip, not 360 deg of RA
    _check_fluxes(result.path, WRAP_SOURCES)


@pytest.mark.filterwarnings("ignore:File may have been truncated")
def test_missing_corrupt_and_empty_images_are_skipped_with_reasons(
    strip: list[Path], tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage-image.fits"
    garbage.write_bytes(os.urandom(5000))
    truncated = tmp_path / "truncated-image.fits"
    truncated.write_bytes(strip[0].read_bytes()[: 2880 * 3])  # header fine, data cut
    blank = tmp_path / "blank-image.fits"
    shutil.copy(strip[0], blank)
    with fits.open(blank, mode="update") as hdul:
        hdul[0].data[:] = np.nan
    missing = tmp_path / "missing-image.fits"
    result = build_mosaic([garbage, *strip, missing, truncated, blank], tmp_path / "m.fits")
    assert result.n_images == 5
    reasons = dict(result.skipped)
    assert set(reasons) == {garbage, missing, truncated, blank}
    assert "no such file" in reasons[missing]
    assert "not a readable FITS" in reasons[garbage]
    assert "no finite pixels" in reasons[blank]
    assert "truncated" in reasons[truncated] or "not a readable FITS" in reasons[truncated]
    _check_fluxes(result.path, STRIP_SOURCES)
    history = "".join(str(h) for h in fits.getheader(result.path)["HISTORY"])
    assert "skipped:" in history and "missing-image.fits" in history


def test_no_usable_image_raises(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage-image.fits"
    garbage.write_bytes(b"SIMPLE  = nonsense")
    with pytest.raises(MosaicError, match="no usable image among 2"):
        build_mosaic([garbage, tmp_path / "gone.fits"], tmp_path / "m.fits")
    with pytest.raises(MosaicError, match="no images"):
        build_mosaic([], tmp_path / "m.fits")
    assert not (tmp_path / "m.fits").exists()


def test_products_are_atomic_and_rerunning_replaces_them(strip: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "day" / "mosaic.fits"
    out.parent.mkdir()
    stale = out.parent / f".{out.name}.{2**30}.deadbeef.tmp"  # a killed run's leftover
    stale.write_bytes(b"partial")
    first = build_mosaic(strip, out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["mosaic-weights.fits", "mosaic.fits"]
    inode = out.stat().st_ino
    second = build_mosaic(strip[:3], out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["mosaic-weights.fits", "mosaic.fits"]
    assert out.stat().st_ino != inode  # renamed into place, not rewritten in place
    assert fits.getheader(out)["NIMAGES"] == 3 and second.n_images == 3
    assert fits.getheader(second.weights_path)["NIMAGES"] == 3
    assert second.effective_noise_jy != first.effective_noise_jy


def test_bad_arguments_are_refused(strip: list[Path], tmp_path: Path) -> None:
    with pytest.raises(MosaicError, match="method"):
        build_mosaic(strip, tmp_path / "m.fits", method="median")
    with pytest.raises(MosaicError, match="pb_cutoff"):
        build_mosaic(strip, tmp_path / "m.fits", pb_cutoff=1.5)
    with pytest.raises(MosaicError, match=".fits"):
        build_mosaic(strip, tmp_path / "m.png")
    with pytest.raises(MosaicError, match="does not exist"):
        build_mosaic(strip, tmp_path / "nowhere" / "m.fits")
