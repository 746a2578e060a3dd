"""pyuvdata as the oracle: our converter against the existing DSA-110 pipeline's own path.

The files' sign convention is pyuvdata's (``dsa110-instrument.md``), and the existing pipeline
(dsa110-contimg) converts them with pyuvdata alone: ``UVData.read`` each subband, one meridian
phase centre per integration (HA 0 at the pointing declination, in ICRS), ``calc_uvw`` for the
UVW, ``data_array`` untouched, ``UVData.write_ms``. Its images match the sky. This module runs
that path on the same simulated group and requires our MS to be the same MS:

* row by row, matched on (TIME, antenna names, window): DATA within float32 precision, UVW
  within 1 mm, TIME exactly, each integration's phase centre within 0.1 arcsec;
* imaged with WSClean after moving every integration to the central field's phase centre
  (pyuvdata's ``UVData.phase`` on its side, :mod:`dsa110_assets.imaging.rephase` on ours), the
  eight sources of the field pattern, spread over the four quadrants at eight different radii
  (a mirror through the phase centre, or an east-west or north-south flip, cannot map one onto
  another), are found within one pixel of the catalog in both images and of each other, at
  their beam-attenuated fluxes.

Nothing here is the platform's code except the simulator (whose files pyuvdata must image at
the catalog positions: that is the simulator's test) and the converter and rephaser under test.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS
from casacore import tables as pt

from dsa110_assets.conversion import ConversionResult, convert_group
from dsa110_assets.imaging.rephase import phase_to_common_centre
from dsa110_assets.verification import direct_fourier_fluxes
from dsa110_assets.verification.pyuvdata_reference import meridian_uvdata, write_ms

N_ANTENNAS = 48
N_CHANNELS = 4
CENTRAL_FIELD = 12
SIM = dict(
    n_groups=1,
    n_antennas=N_ANTENNAS,
    n_channels=N_CHANNELS,
    seed=3,
    calibrator=None,  # the pointing is the zenith; only the eight-source field pattern
    n_background_sources=0,
    noise=False,
    corruptions=False,
)
# Imaging: a uv cut keeps the image small (2.8 deg at 25 arcsec); a mirror moves every source
# by at least 0.6 deg (twice its radius), so 25 arcsec pixels resolve any error by far.
MAX_UV_LAMBDA = 2000.0
PIXEL_ARCSEC = 25.0
IMAGE_PIXELS = 400


# ``root``, ``sim`` and ``files`` (this module's SIM observed once) come from conftest.py.


@pytest.fixture(scope="module")
def ours(files: dict[int, Path], root: Path) -> ConversionResult:
    (root / "shm").mkdir()
    return convert_group(
        files, root / "ms" / "ours.ms", tmpfs_dir=root / "shm", scratch_dir=root / "scratch"
    )


@pytest.fixture(scope="module")
def oracle(files: dict[int, Path], root: Path) -> dict[str, dict[int, Path]]:
    """Write pyuvdata's meridian and rephased MS for every subband.

    Per subband: pyuvdata's meridian MS, and the same phased to the central field's centre
    with pyuvdata's own ``UVData.phase`` (for imaging all integrations as one field).
    """
    out: dict[str, dict[int, Path]] = {"meridian": {}, "central": {}}
    folder = root / "pyuvdata"
    folder.mkdir()
    for sb, path in sorted(files.items()):
        uv = meridian_uvdata(path)
        out["meridian"][sb] = write_ms(uv, folder / f"sb{sb:02d}_meridian.ms")
        centre = uv.phase_center_catalog[_catalog_id(uv, f"meridian_icrs_t{CENTRAL_FIELD}")]
        uv.phase(
            lon=centre["cat_lon"],
            lat=centre["cat_lat"],
            epoch="J2000",
            phase_frame="icrs",
            cat_name="central",
        )
        out["central"][sb] = write_ms(uv, folder / f"sb{sb:02d}_central.ms")
    return out


def _catalog_id(uv, name: str) -> int:
    return next(k for k, v in uv.phase_center_catalog.items() if v["cat_name"] == name)


# -- row by row ----------------------------------------------------------------------------


def _rows(ms: Path, spw: int | None = None) -> dict[str, np.ndarray]:
    with pt.table(f"{ms}/ANTENNA", ack=False) as a:
        # antennas are matched by ITRF position (to 1 mm): the two paths name them differently
        # (ours "DSA-001" with the file's "1" as STATION, pyuvdata's "1")
        position = np.round(a.getcol("POSITION") * 1e3).astype(np.int64)
        names = np.array(["{}/{}/{}".format(*p) for p in position])
    with pt.table(str(ms), ack=False) as t:
        sel = t.query(f"DATA_DESC_ID == {spw}") if spw is not None else t
        cols = {c: sel.getcol(c) for c in ("TIME", "ANTENNA1", "ANTENNA2", "UVW", "DATA")}
        cols["FIELD_ID"] = sel.getcol("FIELD_ID")
    cols["NAME1"], cols["NAME2"] = names[cols["ANTENNA1"]], names[cols["ANTENNA2"]]
    order = np.lexsort((cols["NAME2"], cols["NAME1"], cols["TIME"]))
    return {k: v[order] for k, v in cols.items()}


def test_every_row_matches_the_existing_pipelines_pyuvdata_path(
    ours: ConversionResult, oracle: dict[str, dict[int, Path]]
) -> None:
    """Check our MS against pyuvdata's: DATA, TIME and UVW.

    DATA bit for bit, TIME exactly, ``w`` and ``|uvw|`` within 1 mm; ``(u, v)`` within 1 mm
    once each integration's frame position angle is matched.

    pyuvdata takes the ``(u, v)`` axes' orientation from ``calc_frame_pos_angle`` (geocentric
    apparent coordinates through ERFA); we take local ICRS north at the topocentric direction
    (:mod:`dsa110_assets.conversion.meridian`). The two conventions differ by a rotation about
    ``w`` of 0.3-0.5 arcsec (4 mm on the longest baseline), the same for every row of an
    integration: it moves a source 1.5 deg from the centre by 0.01 arcsec. The test measures
    that rotation, bounds it (< 1 arcsec) and requires everything else to agree within 1 mm.
    """
    worst = {"data": 0.0, "w_m": 0.0, "uv_m": 0.0, "raw_m": 0.0, "rotation_arcsec": 0.0}
    for sb, reference in oracle["meridian"].items():
        spw = 15 - sb  # window 0 is sb15, the lowest band
        a, b = _rows(ours.ms_path, spw), _rows(reference)
        assert len(a["TIME"]) == len(b["TIME"]) > 0
        np.testing.assert_array_equal(a["TIME"], b["TIME"])  # exactly
        np.testing.assert_array_equal(a["NAME1"], b["NAME1"])
        np.testing.assert_array_equal(a["NAME2"], b["NAME2"])
        np.testing.assert_array_equal(a["DATA"], b["DATA"])  # conj(data_array), bit for bit
        np.testing.assert_allclose(
            np.linalg.norm(a["UVW"], axis=1), np.linalg.norm(b["UVW"], axis=1), atol=1e-3
        )
        w_delta = float(np.abs(a["UVW"][:, 2] - b["UVW"][:, 2]).max())
        assert w_delta < 1e-3, f"sb{sb:02d}: w off by {w_delta} m"
        for when in np.unique(a["TIME"]):
            rows = a["TIME"] == when
            ua, ub = a["UVW"][rows, :2], b["UVW"][rows, :2]
            cross = ua[:, 0] * ub[:, 1] - ua[:, 1] * ub[:, 0]
            angle = np.arctan2(np.sum(cross), np.sum(ua * ub))
            turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            uv_delta = float(np.abs(ua @ turn.T - ub).max())
            assert abs(np.degrees(angle)) * 3600 < 1.0
            assert uv_delta < 1e-3, f"sb{sb:02d}: (u, v) off by {uv_delta} m after the rotation"
            worst["uv_m"] = max(worst["uv_m"], uv_delta)
            worst["rotation_arcsec"] = max(worst["rotation_arcsec"], abs(np.degrees(angle)) * 3600)
        worst["w_m"] = max(worst["w_m"], w_delta)
        worst["raw_m"] = max(worst["raw_m"], float(np.abs(a["UVW"] - b["UVW"]).max()))
    print(
        f"oracle deltas: DATA identical; w {worst['w_m'] * 1e3:.2e} mm; (u, v) "
        f"{worst['uv_m'] * 1e3:.3f} mm after a frame rotation of at most "
        f"{worst['rotation_arcsec']:.3f} arcsec ({worst['raw_m'] * 1e3:.2f} mm before)"
    )


def test_each_integrations_phase_centre_matches_pyuvdatas(
    ours: ConversionResult, oracle: dict[str, dict[int, Path]]
) -> None:
    def fields(ms: Path) -> tuple[list[str], np.ndarray]:
        with pt.table(f"{ms}/FIELD", ack=False) as f:
            return list(f.getcol("NAME")), f.getcol("PHASE_DIR")[:, 0, :]

    names, dirs = fields(ours.ms_path)
    ref_names, ref_dirs = fields(oracle["meridian"][5])
    assert len(names) == 24
    ref = {n: d for n, d in zip(ref_names, ref_dirs, strict=True)}
    ours_c = SkyCoord(dirs[:, 0] * u.rad, dirs[:, 1] * u.rad)
    ref_c = SkyCoord(
        np.array([ref[n][0] for n in names]) * u.rad, np.array([ref[n][1] for n in names]) * u.rad
    )
    offsets = ours_c.separation(ref_c).arcsec
    assert offsets.max() < 0.1, offsets
    print(f"phase centres: max offset {offsets.max():.4f} arcsec")


# -- the sky, imaged by WSClean ------------------------------------------------------------


def _wsclean(measurement_sets: list[Path], name: Path, field: int | None) -> Path:
    cmd = [
        "wsclean", "-quiet", "-reorder", "-no-update-model-required",
        "-size", str(IMAGE_PIXELS), str(IMAGE_PIXELS), "-scale", f"{PIXEL_ARCSEC}asec",
        "-maxuv-l", str(MAX_UV_LAMBDA), "-weight", "briggs", "0",
        "-niter", "3000", "-mgain", "0.8", "-auto-threshold", "0.5",
        "-temp-dir", str(name.parent), "-name", str(name),
    ]  # fmt: skip
    if field is not None:
        cmd += ["-field", str(field)]
    run = subprocess.run(cmd + [str(ms) for ms in measurement_sets], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return Path(f"{name}-image.fits")


def _peak_near(image: np.ndarray, x: float, y: float, box: int = 4) -> tuple[float, float, float]:
    """Brightest pixel within ``box`` of (x, y), refined by a parabola per axis: x, y, value."""
    ix, iy = int(round(x)), int(round(y))
    cut = image[iy - box : iy + box + 1, ix - box : ix + box + 1]
    jy, jx = np.unravel_index(np.argmax(cut), cut.shape)
    py, px = iy - box + jy, ix - box + jx

    def refine(left: float, mid: float, right: float) -> float:
        denom = left - 2 * mid + right
        return 0.0 if denom == 0 else 0.5 * (left - right) / denom

    fx = px + refine(image[py, px - 1], image[py, px], image[py, px + 1])
    fy = py + refine(image[py - 1, px], image[py, px], image[py + 1, px])
    return fx, fy, float(image[py, px])


@pytest.fixture(scope="module")
def images(
    ours: ConversionResult, oracle: dict[str, dict[int, Path]], root: Path
) -> dict[str, Path]:
    folder = root / "images"
    folder.mkdir()
    ours_copy = root / "ms" / "ours_central.ms"
    shutil.copytree(ours.ms_path, ours_copy)
    phase_to_common_centre(ours_copy, CENTRAL_FIELD)
    return {
        "ours": _wsclean([ours_copy], folder / "ours", CENTRAL_FIELD),  # rows keep field ids
        "pyuvdata": _wsclean(list(oracle["central"].values()), folder / "pyuvdata", None),
    }


def test_both_paths_image_every_quadrant_at_the_catalog_positions(
    sim, images: dict[str, Path], ours: ConversionResult
) -> None:
    found: dict[str, dict[str, tuple[float, float, float]]] = {}
    to_catalog: dict[str, float] = {}
    for label, path in images.items():
        with fits.open(path) as hdul:
            image = hdul[0].data[0, 0]
            wcs = WCS(hdul[0].header).celestial
        centre = SkyCoord(*wcs.wcs.crval, unit="deg")
        found[label] = {}
        quadrants = set()
        for src in sim.sources:
            where = SkyCoord(src.ra_deg * u.deg, src.dec_deg * u.deg)
            x, y = wcs.world_to_pixel(where)
            fx, fy, peak = _peak_near(image, float(x), float(y))
            assert np.hypot(fx - x, fy - y) <= 1.0, (
                f"{label}: {src.name} at {(fx, fy)}, not {(x, y)}"
            )
            found[label][src.name] = (fx, fy, peak)
            to_catalog[label] = max(to_catalog.get(label, 0.0), float(np.hypot(fx - x, fy - y)))
            # the reflection through the phase centre holds nothing of it
            mx, my = 2 * np.array(wcs.world_to_pixel(centre)) - np.array([x, y])
            assert abs(image[int(round(my)), int(round(mx))]) < 0.2 * peak, f"{label}: mirror"
            dra = (where.ra - centre.ra).wrap_at(180 * u.deg).deg
            quadrants.add((dra > 0, where.dec.deg > centre.dec.deg))
        assert len(quadrants) == 4
    offsets = [
        np.hypot(*(np.subtract(found["ours"][n][:2], found["pyuvdata"][n][:2])))
        for n in found["ours"]
    ]
    assert max(offsets) <= 1.0, offsets
    peaks = np.array([[found[k][n][2] for n in found["ours"]] for k in ("ours", "pyuvdata")])
    np.testing.assert_allclose(peaks[0], peaks[1], rtol=0.02)
    fourier = {f.name: f for f in direct_fourier_fluxes(ours.ms_path, sim.sources)}
    expected = np.array([fourier[n].expected_jy for n in found["ours"]])
    # Each source is there with most of its mean apparent flux (0.8-1.0 measured: the peak
    # pixel of a drifting source whose beam changes during the scan, cleaned to 0.5 sigma);
    # fluxes to 5% are the direct Fourier check's job. A mirrored sky would read ~0.
    assert np.all((peaks[0] / expected > 0.75) & (peaks[0] / expected < 1.1)), peaks[0] / expected
    print(
        f"image offsets (px): ours vs pyuvdata max {max(offsets):.3f}; vs catalog max "
        f"{to_catalog}; peak/expected ours {np.round(peaks[0] / expected, 3)}"
    )


def test_the_direct_fourier_check_sees_the_catalog_sky(
    sim, ours: ConversionResult, oracle: dict[str, dict[int, Path]]
) -> None:
    """Check source fluxes and their mirrored ghosts directly from the phased visibilities.

    No imager: each source's phased visibilities give its beam-attenuated flux, and its
    reflection through the phase centre gives nothing. (Our MS equals pyuvdata's row by row,
    so this holds for both.)
    """
    fluxes = direct_fourier_fluxes(ours.ms_path, sim.sources)
    ratios = np.array([f.ratio for f in fluxes])
    np.testing.assert_allclose(ratios, 1.0, atol=0.05)
    mirrored = [_mirror(src, ours.ms_path) for src in sim.sources]
    # fitted together with the true sky, so no real source's sidelobes leak into a ghost
    both = direct_fourier_fluxes(ours.ms_path, [*sim.sources, *mirrored])
    ghost = np.array([f.ratio for f in both[len(sim.sources) :]])
    assert np.abs(ghost).max() < 0.1, ghost
    print(f"fourier ratios {np.round(ratios, 4)}; mirrored {np.round(ghost, 4)}")


def _mirror(src, ms: Path):
    """Return the source reflected through the central field's phase centre."""
    from dsa110_assets.simulation import PointSource

    with pt.table(f"{ms}/FIELD", ack=False) as f:
        ra0, dec0 = np.degrees(f.getcol("PHASE_DIR")[CENTRAL_FIELD, 0])
    return PointSource(
        f"{src.name}_mirror",
        ra0 - (src.ra_deg - ra0),
        dec0 - (src.dec_deg - dec0),
        src.flux_1400_jy,
        src.spectral_index,
    )
