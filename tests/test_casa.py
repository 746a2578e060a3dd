"""CASA as the second oracle: CASA 6.7's own tasks, run on our products, must agree with us.

CASA lives in its own environment (``.venv-casa``, built by ``make setup`` from
``tests/casa/requirements.txt``) and runs in a subprocess (``tests/casa/run_tasks.py``),
offline (``tests/casa/casasiteconfig.py``: casadata's measures, no auto-updates, logs in the
test's temporary folder). A missing CASA environment fails these tests: it is part of the setup.

Two small groups, each built once per module:

* ``cal``: a 3C286 transit (32 antennas, 16 x 4 channels, noise and corruptions on). We solve
  it (bandpass, and gains at the pipeline's 60 s and per integration), write MODEL_DATA with the
  model we solved against (as the calibration step does) and apply. CASA then (1) applies our
  tables (``applycal``) and must reproduce our CORRECTED_DATA, (2) solves the same MS itself
  (``bandpass`` + ``gaincal``, ``uvrange='>1klambda'``, our reference antenna) and must find
  our g * B, and (3) its ``combine='spw'`` gain table must apply with our code as with
  ``applycal(spwmap=...)``.
  Why rows are pre-flagged: CASA's ``uvrange`` in klambda keeps or drops whole rows (|uv| at
  the window's REF_FREQUENCY), our solver drops single channels (|uv| at each channel), so rows
  straddling 1 klambda are used differently (0.5% in amplitude on the antennas with few long
  baselines). Flagging those few rows (~0.3%) in the MS makes both solvers see the same
  samples, so the comparison measures the solvers, not the selection rule.
* ``sky``: a noise-free zenith group whose DATA are our model of six point sources spread over
  all four quadrants (0.35-1.0 deg out), phased to the central integration. WSClean and CASA's
  ``tclean`` image it with the same cell and size; every source is found within one pixel in
  both, of each other and of its catalog position (a mirrored or shifted sky cannot pass).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import warnings
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from casacore import tables as pt

from dsa110_assets.calibration import (
    apply_calibration,
    read_caltable,
    solve_calibrator,
    write_bandpass_table,
    write_gain_table,
)
from dsa110_assets.calibration.model import write_model_column
from dsa110_assets.conversion import convert_group
from dsa110_assets.imaging import phase_to_common_centre
from dsa110_assets.imaging.imaging_ms import (
    VISIBILITY_COLUMNS,
    bandwidth_smearing_peak,
    write_imaging_ms,
)
from dsa110_assets.imaging.wsclean import WSCleanParams, choose_image_geometry, run_wsclean
from dsa110_assets.instrument import INTEGRATION_S, SPEED_OF_LIGHT_M_S
from dsa110_assets.naming import parse_subband_filename
from dsa110_assets.simulation import SimulationConfig, simulate_observations
from dsa110_assets.simulation.sky import PointSource, get_calibrator, read_catalog

REPO = Path(__file__).resolve().parents[1]
CASA_DIR = REPO / "tests" / "casa"
CASA_PYTHON = Path(os.environ.get("DSA110_CASA_PYTHON", REPO / ".venv-casa" / "bin" / "python"))
UV_MIN_KLAMBDA = 1.0
CAL = dict(n_antennas=32, n_channels=4, seed=5, n_background_sources=0, noise=True)
SKY = dict(
    n_antennas=24,
    n_channels=2,
    seed=8,
    calibrator=None,
    n_background_sources=0,
    noise=False,
    corruptions=False,
)
# (position angle east of north in deg, radius in deg, flux at 1.4 GHz in Jy): two sources in
# each of the NE and SW quadrants, one in each of the others, all radii different.
SKY_PATTERN = (
    (40.0, 0.45, 3.0),
    (80.0, 0.9, 4.0),
    (150.0, 0.6, 3.0),
    (215.0, 0.35, 2.5),
    (250.0, 1.0, 4.0),
    (320.0, 0.75, 3.0),
)
RATIO_TOLERANCE = 1e-5
AMPLITUDE_TOLERANCE = 0.005
PHASE_TOLERANCE_DEG = 0.5


# -- the CASA subprocess ----------------------------------------------------------------------


def run_casa(steps: list[dict], workdir: Path) -> dict:
    """Run ``steps`` (see ``tests/casa/run_tasks.py``) with CASA in ``workdir``; its report.

    Fails (never skips) when the CASA environment is missing: ``make setup`` builds it.
    """
    if not CASA_PYTHON.is_file():
        pytest.fail(
            f"the CASA environment is missing ({CASA_PYTHON}); run `make setup`, which builds "
            "it from tests/casa/requirements.txt"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    logs = workdir / "casa-logs"
    logs.mkdir(exist_ok=True)
    steps_file, report_file = workdir / "steps.json", workdir / "report.json"
    steps_file.write_text(json.dumps(steps, indent=1))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(
        CASASITECONFIG=str(CASA_DIR / "casasiteconfig.py"),
        DSA110_CASA_LOGDIR=str(logs),
        PYTHONWARNINGS="ignore",  # casatasks' own SyntaxWarnings on first import
    )
    done = subprocess.run(
        [str(CASA_PYTHON), str(CASA_DIR / "run_tasks.py"), "--noconfig", str(steps_file)]
        + [str(report_file)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, f"CASA failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return json.loads(report_file.read_text())


# -- helpers ----------------------------------------------------------------------------------


def _simulate_and_convert(root: Path, **cfg) -> tuple[Path, Path]:
    sim = simulate_observations(
        SimulationConfig(output_dir=root / "in", truth_dir=root / "truth", **cfg)
    )
    files = {parse_subband_filename(p.name).subband: p for p in sim.groups[0].files}
    ms = root / "group.ms"
    convert_group(files, ms, tmpfs_dir=None, scratch_dir=root / "scratch", durable=False)
    return ms, sim.catalog_path


def _flag_rows_straddling(ms: Path, uv_min_klambda: float) -> int:
    """Flag rows whose channels lie on both sides of the uv cut; returns how many."""
    with pt.table(str(ms / "SPECTRAL_WINDOW"), ack=False) as t:
        freqs = t.getcol("CHAN_FREQ")
    with pt.table(str(ms), readonly=False, ack=False) as t:
        uvw, ddid, flag = t.getcol("UVW"), t.getcol("DATA_DESC_ID"), t.getcol("FLAG")
        above = np.hypot(uvw[:, 0], uvw[:, 1])[:, None] * freqs[ddid] / SPEED_OF_LIGHT_M_S
        above = above > uv_min_klambda * 1e3
        mixed = above.any(axis=1) & ~above.all(axis=1)
        flag[mixed] = True
        t.putcol("FLAG", flag)
        t.putcol("FLAG_ROW", flag.all(axis=(1, 2)))
    return int(mixed.sum())


def _column(ms: Path, column: str) -> np.ndarray:
    with pt.table(str(ms), ack=False) as t:
        return t.getcol(column)


def _copy(ms: Path, dest: Path) -> Path:
    shutil.copytree(ms, dest)
    return dest


def _total_gains(bandpass: Path, gains: Path) -> tuple[np.ndarray, np.ndarray]:
    """(solution times, g * B) of a B and a G table, NaN where either is flagged.

    ``g * B`` has shape (n_time, n_spw, n_ant, n_chan, n_pol); the G table may hold one window
    for all (CASA ``combine='spw'``) or the same values for every window (ours).
    """
    b, g = read_caltable(bandpass, "B Jones"), read_caltable(gains, "G Jones")
    n_spw, n_ant = len(b.spw_chan_freq), len(b.antenna_names)
    band = np.full((n_spw, n_ant, b.cparam.shape[1], b.n_pol), np.nan, np.complex128)
    band[b.spw_id, b.antenna1] = np.where(b.flag, np.nan, b.cparam)
    first = np.flatnonzero(g.spw_id == g.spw_id.min())
    times = np.unique(g.time[first])
    gain = np.full((times.size, n_ant, g.n_pol), np.nan, np.complex128)
    gain[np.searchsorted(times, g.time[first]), g.antenna1[first]] = np.where(
        g.flag[first, 0], np.nan, g.cparam[first, 0]
    )
    return times, gain[:, None, :, None, :] * band[None]


def _corrected_ratio(ours: Path, casa: Path) -> tuple[np.ndarray, int]:
    """CASA / ours CORRECTED_DATA on samples both left unflagged, and how many those are."""
    keep = ~_column(ours, "FLAG") & ~_column(casa, "FLAG")
    mine, theirs = _column(ours, "CORRECTED_DATA")[keep], _column(casa, "CORRECTED_DATA")[keep]
    nonzero = np.abs(mine) > 0
    return theirs[nonzero] / mine[nonzero], int(keep.sum())


# -- the calibrator group ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def cal(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Our calibration of a calibrator group, then CASA's applycal, bandpass and gaincal."""
    root = tmp_path_factory.mktemp("casa-cal")
    ms, catalog = _simulate_and_convert(root, **CAL)
    straddling = _flag_rows_straddling(ms, UV_MIN_KLAMBDA)
    calibrator = get_calibrator("3C286")
    others = [s for s in read_catalog(catalog) if s.name != calibrator.name]
    solved = solve_calibrator(ms, calibrator, field_sources=others, uv_min_klambda=UV_MIN_KLAMBDA)
    per_int = solve_calibrator(
        ms,
        calibrator,
        field_sources=others,
        uv_min_klambda=UV_MIN_KLAMBDA,
        gain_solint_s=INTEGRATION_S,
        refant=solved.refant_name,
    )
    tables = {
        "ours.B": write_bandpass_table(root / "ours.B", solved, ms),
        "ours.G": write_gain_table(root / "ours.G", solved, ms),
        "int.B": write_bandpass_table(root / "int.B", per_int, ms),
        "int.G": write_gain_table(root / "int.G", per_int, ms),
    }
    write_model_column(ms, [calibrator, *others])  # what the calibration step delivers
    copies = {
        name: _copy(ms, root / f"{name}.ms")
        for name in ("casa_solve", "casa_apply_ours", "casa_apply_casa", "ours_apply_casa")
    }
    apply_calibration(ms, tables["ours.B"], tables["ours.G"])
    n_spw = int(_column(ms, "DATA_DESC_ID").max()) + 1
    casa_b, casa_g = root / "casa.B", root / "casa.G"
    solve = dict(vis=str(copies["casa_solve"]), refant=solved.refant_name, minsnr=3.0)
    solve["uvrange"] = f">{UV_MIN_KLAMBDA:g}klambda"
    steps = [
        {
            "task": "bandpass",
            "args": dict(solve, caltable=str(casa_b), solint="inf", combine="scan,field"),
            "creates": [str(casa_b)],
        },
        {
            "task": "gaincal",
            "args": dict(
                solve,
                caltable=str(casa_g),
                gaintable=[str(casa_b)],
                solint="int",
                combine="spw",
                calmode="ap",
                gaintype="G",
            ),
            "creates": [str(casa_g)],
        },
        {
            "task": "applycal",
            "args": dict(
                vis=str(copies["casa_apply_ours"]),
                gaintable=[str(tables["ours.B"]), str(tables["ours.G"])],
                calwt=True,
                flagbackup=False,
            ),
        },
        {
            "task": "applycal",
            "args": dict(
                vis=str(copies["casa_apply_casa"]),
                gaintable=[str(casa_b), str(casa_g)],
                spwmap=[[], [0] * n_spw],
                calwt=True,
                flagbackup=False,
            ),
        },
    ]
    started = time.perf_counter()
    report = run_casa(steps, root / "casa")
    return dict(
        ms=ms,
        root=root,
        straddling=straddling,
        solved=solved,
        tables=tables,
        copies=copies,
        casa_b=casa_b,
        casa_g=casa_g,
        report=report,
        casa_s=time.perf_counter() - started,
        model_sources=[calibrator, *others],
    )


def test_casa_applycal_with_our_tables_reproduces_our_corrected_data(cal: dict) -> None:
    ratio, n = _corrected_ratio(cal["ms"], cal["copies"]["casa_apply_ours"])
    assert n > 0.9 * _column(cal["ms"], "FLAG").size  # nearly everything was compared
    deviation = np.abs(ratio - 1.0)
    print(f"applycal/ours: max |ratio - 1| {deviation.max():.2e} over {n} samples")
    assert deviation.max() < RATIO_TOLERANCE


def test_casa_bandpass_and_gaincal_agree_with_our_solutions(cal: dict) -> None:
    assert 0 < cal["straddling"] < 0.02 * _column(cal["ms"], "FLAG_ROW").size
    t_ours, ours = _total_gains(cal["tables"]["int.B"], cal["tables"]["int.G"])
    t_casa, casa = _total_gains(cal["casa_b"], cal["casa_g"])
    np.testing.assert_allclose(t_casa, t_ours, atol=0.01)  # one solution per integration
    both = np.isfinite(ours) & np.isfinite(casa)
    assert both.sum() > 0.95 * np.isfinite(ours).sum() > 0
    ratio = casa[both] / ours[both]
    amplitude = np.abs(np.abs(ratio) - 1.0)
    phase = np.abs(np.degrees(np.angle(ratio)))
    print(
        f"CASA/ours g*B over {both.sum()} values: amplitude max {amplitude.max():.2e} "
        f"rms {np.sqrt(np.mean(amplitude**2)):.2e}, phase max {phase.max():.4f} deg "
        f"rms {np.sqrt(np.mean(phase**2)):.4f} deg; CASA ran {cal['casa_s']:.1f} s"
    )
    assert amplitude.max() < AMPLITUDE_TOLERANCE
    assert phase.max() < PHASE_TOLERANCE_DEG


def test_model_data_holds_the_model_we_solved_against(cal: dict) -> None:
    """CASA's gaincal divides by MODEL_DATA: it must be our model, never zeros."""
    model = _column(cal["ms"], "MODEL_DATA")
    live = ~_column(cal["ms"], "FLAG_ROW")
    assert np.all(np.abs(model[live]) > 0)
    with pt.table(str(cal["ms"]), ack=False) as t:
        assert t.getcoldesc("MODEL_DATA")["dataManagerType"] == "TiledColumnStMan"


def test_our_apply_accepts_a_casa_combined_window_gain_table(cal: dict) -> None:
    table = read_caltable(cal["casa_g"], "G Jones")
    assert np.unique(table.spw_id).tolist() == [0]  # what combine='spw' writes
    target = cal["copies"]["ours_apply_casa"]
    result = apply_calibration(target, cal["casa_b"], cal["casa_g"])
    assert result.n_spw == int(_column(target, "DATA_DESC_ID").max()) + 1
    ratio, n = _corrected_ratio(target, cal["copies"]["casa_apply_casa"])
    deviation = np.abs(ratio - 1.0)
    print(f"ours/applycal(spwmap) with CASA's tables: max |ratio - 1| {deviation.max():.2e}")
    assert n > 0.9 * _column(target, "FLAG").size
    assert deviation.max() < RATIO_TOLERANCE


# -- imaging: tclean and WSClean on the same sky ----------------------------------------------


def _six_source_ms(root: Path, cfg: dict) -> tuple[Path, int, list[PointSource]]:
    """Simulate and convert ``cfg``; DATA = our model of SKY_PATTERN's six sources.

    Returns the MS, its central field and the sources (placed around that field's centre).
    """
    ms, _ = _simulate_and_convert(root, **cfg)
    with pt.table(str(ms / "FIELD"), ack=False) as t:
        centre = t.nrows() // 2
    sources = _sky_sources(ms, centre)
    write_model_column(ms, sources, column="DATA")
    return ms, centre, sources


def _sky_sources(ms: Path, field: int) -> list[PointSource]:
    with pt.table(str(ms / "FIELD"), ack=False) as t:
        ra, dec = np.degrees(t.getcell("PHASE_DIR", field)[0])
    centre = SkyCoord(ra * u.deg, dec * u.deg, frame="icrs")
    where = centre.directional_offset_by(
        np.array([p[0] for p in SKY_PATTERN]) * u.deg, np.array([p[1] for p in SKY_PATTERN]) * u.deg
    )
    return [
        PointSource(f"Q{k}", float(where.ra.deg[k]), float(where.dec.deg[k]), flux, -0.7)
        for k, (_, _, flux) in enumerate(SKY_PATTERN)
    ]


def _peak_pixel(image: np.ndarray, x: float, y: float, radius: int = 6) -> tuple[float, float]:
    """Sub-pixel (x, y) of the brightest pixel within ``radius`` of (x, y) (parabola fits)."""
    ny, nx = image.shape
    x0, y0 = int(round(x)), int(round(y))
    box = image[max(y0 - radius, 1) : min(y0 + radius + 1, ny - 1), max(x0 - radius, 1) :]
    box = box[:, : min(x0 + radius + 1, nx - 1) - max(x0 - radius, 1)]
    iy, ix = np.unravel_index(np.argmax(box), box.shape)
    py, px = iy + max(y0 - radius, 1), ix + max(x0 - radius, 1)

    def vertex(a: float, b: float, c: float) -> float:
        den = a - 2 * b + c
        return 0.0 if den == 0 else 0.5 * (a - c) / den

    dx = vertex(image[py, px - 1], image[py, px], image[py, px + 1])
    dy = vertex(image[py - 1, px], image[py, px], image[py + 1, px])
    return px + dx, py + dy


def _found(fits_path: Path, sources: list[PointSource]) -> tuple[np.ndarray, float, np.ndarray]:
    """Peak sky positions (n, 2) deg, the pixel size in arcsec, and peak / rms per source."""
    with fits.open(fits_path) as hdul, warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)  # CASA's DATE-OBS/OBSGEO headers
        image = np.asarray(hdul[0].data, dtype=np.float64).squeeze()
        wcs = WCS(hdul[0].header).celestial
    rms = 1.4826 * np.median(np.abs(image - np.median(image)))
    positions, snr = [], []
    for src in sources:
        x, y = wcs.world_to_pixel(SkyCoord(src.ra_deg * u.deg, src.dec_deg * u.deg))
        px, py = _peak_pixel(image, float(x), float(y))
        world = wcs.pixel_to_world(px, py)
        positions.append((world.ra.deg, world.dec.deg))
        snr.append(image[int(round(py)), int(round(px))] / rms)
    pixel_arcsec = float(np.abs(wcs.wcs.cdelt[1]) * 3600.0)
    return np.array(positions), pixel_arcsec, np.array(snr)


def _offsets_pixels(a: np.ndarray, b: np.ndarray, pixel_arcsec: float) -> np.ndarray:
    one = SkyCoord(a[:, 0] * u.deg, a[:, 1] * u.deg)
    two = SkyCoord(b[:, 0] * u.deg, b[:, 1] * u.deg)
    return one.separation(two).arcsec / pixel_arcsec


@pytest.fixture(scope="module")
def sky(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("casa-sky")
    ms, centre, sources = _six_source_ms(root, SKY)
    phase_to_common_centre(ms, centre)
    geometry = choose_image_geometry(ms, pixels_per_beam=3.0, fov_deg=2.4)
    params = WSCleanParams(
        size=geometry.size,
        scale_arcsec=geometry.scale_arcsec,
        niter=1000,
        data_column="DATA",
        auto_mask=None,
        auto_threshold=None,
        field=centre,
        threads=2,
    )
    wsclean = run_wsclean(ms, root / "wsclean", "sky", params)
    casa_image = root / "casa" / "sky"
    casa_fits = root / "casa" / "sky-image.fits"
    steps = [
        {
            "task": "tclean",
            "args": dict(
                vis=str(ms),
                imagename=str(casa_image),
                field=str(centre),
                datacolumn="data",
                imsize=[geometry.size, geometry.size],
                cell=f"{geometry.scale_arcsec:g}arcsec",
                specmode="mfs",
                gridder="standard",
                deconvolver="hogbom",
                weighting="briggs",
                robust=0.5,
                niter=1000,
                gain=0.1,
                savemodel="none",
            ),
            "creates": [f"{casa_image}.image"],
        },
        {
            "task": "exportfits",
            "args": dict(imagename=f"{casa_image}.image", fitsimage=str(casa_fits)),
            "creates": [str(casa_fits)],
        },
    ]
    started = time.perf_counter()
    report = run_casa(steps, root / "casa")
    return dict(
        sources=sources,
        wsclean=wsclean.image,
        casa=casa_fits,
        report=report,
        casa_s=time.perf_counter() - started,
        size=geometry.size,
    )


def test_tclean_finds_the_off_centre_sources_where_wsclean_does(sky: dict) -> None:
    sources = sky["sources"]
    catalog = np.array([(s.ra_deg, s.dec_deg) for s in sources])
    ws, ws_pixel, ws_snr = _found(sky["wsclean"], sources)
    ca, ca_pixel, ca_snr = _found(sky["casa"], sources)
    assert ws_pixel == pytest.approx(ca_pixel, rel=1e-6)
    between = _offsets_pixels(ws, ca, ws_pixel)
    ws_catalog = _offsets_pixels(ws, catalog, ws_pixel)
    ca_catalog = _offsets_pixels(ca, catalog, ws_pixel)
    print(
        f"{sky['size']} px of {ws_pixel:.1f} arcsec; offsets in pixels: tclean-WSClean "
        f"{np.round(between, 3).tolist()}, WSClean-catalog {np.round(ws_catalog, 3).tolist()}, "
        f"tclean-catalog {np.round(ca_catalog, 3).tolist()}; S/N WSClean "
        f"{np.round(ws_snr).tolist()}, tclean {np.round(ca_snr).tolist()}; "
        f"CASA ran {sky['casa_s']:.1f} s"
    )
    assert np.all(ws_snr > 20) and np.all(ca_snr > 20)  # real detections, not noise peaks
    assert np.all(between < 1.0)
    assert np.all(ws_catalog < 1.0) and np.all(ca_catalog < 1.0)


# -- the imaging copy: CASA's mstransform averages as we do; smearing as the formula says -----

AVG = dict(SKY, n_channels=8, seed=9)
AVG_BIN = 4
FLAGGED_FRACTION = 0.3


def _corrupt_for_averaging(ms: Path, seed: int) -> None:
    """Make CORRECTED_DATA differ from DATA per channel and flag a third of the samples.

    Why: the averaging must weigh only unflagged samples and treat both columns alike; a
    column copied from the other, or flags ignored, would then show.
    """
    rng = np.random.default_rng(seed)
    with pt.table(str(ms), readonly=False, ack=False) as t:
        n_chan = t.getcell("DATA", 0).shape[0]
        ramp = (1.0 + 0.1 * np.arange(n_chan)) * np.exp(0.3j * np.arange(n_chan))
        t.putcol("CORRECTED_DATA", t.getcol("DATA") * ramp.astype(np.complex64)[None, :, None])
        flags = t.getcol("FLAG")
        flags |= rng.random(flags.shape) < FLAGGED_FRACTION
        flags[:7, :AVG_BIN, :] = True  # whole bins flagged too
        t.putcol("FLAG", flags)


@pytest.fixture(scope="module")
def averaged(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Return a six-source sky averaged by us and by CASA (mstransform), imaged at two widths."""
    root = tmp_path_factory.mktemp("casa-average")
    ms, centre, sources = _six_source_ms(root, AVG)
    clean = _copy(ms, root / "clean.ms")  # unflagged, for the images
    _corrupt_for_averaging(ms, seed=3)
    ours = write_imaging_ms(ms, root / "ours.ms", chan_bin=AVG_BIN)
    phased = _copy(ms, root / "phased.ms")
    phase_to_common_centre(phased, centre)
    casa_ms = root / "casa.ms"
    step = dict(vis=str(phased), outputvis=str(casa_ms), datacolumn="all", chanaverage=True)
    run_casa(
        [{"task": "mstransform", "args": dict(step, chanbin=AVG_BIN), "creates": [str(casa_ms)]}],
        root / "casa",
    )
    whole = write_imaging_ms(clean, root / "whole.ms", chan_bin=AVG["n_channels"])
    phase_to_common_centre(clean, centre)
    geometry = choose_image_geometry(clean, pixels_per_beam=3.0, fov_deg=2.4)
    params = WSCleanParams(
        size=geometry.size, scale_arcsec=geometry.scale_arcsec, niter=1, data_column="DATA",
        auto_mask=None, auto_threshold=None, threads=2,
    )  # fmt: skip
    images = {
        name: run_wsclean(path, root / "images", name, params).image
        for name, path in (("full", clean), ("whole", whole.path))
    }
    return dict(ours=ours, casa=casa_ms, sources=sources, images=images, clean=clean, phased=phased)


def test_casa_mstransform_averages_channels_as_our_imaging_copy(averaged: dict) -> None:
    ours, casa = averaged["ours"].path, averaged["casa"]
    for column in ("CHAN_FREQ", "CHAN_WIDTH", "EFFECTIVE_BW", "RESOLUTION"):
        with (
            pt.table(f"{ours}::SPECTRAL_WINDOW", ack=False) as a,
            pt.table(f"{casa}::SPECTRAL_WINDOW", ack=False) as b,
        ):
            np.testing.assert_allclose(a.getcol(column), b.getcol(column), rtol=1e-12)
    flags = _column(ours, "FLAG")
    np.testing.assert_array_equal(flags, _column(casa, "FLAG"))
    assert 0 < flags.mean() < 0.05  # some whole bins, not every partial one
    np.testing.assert_allclose(_column(ours, "UVW"), _column(casa, "UVW"), atol=1e-6)
    for column in VISIBILITY_COLUMNS:
        a, b = _column(ours, column)[~flags], _column(casa, column)[~flags]
        scale = np.abs(b).max()
        assert np.abs(a - b).max() < 1e-5 * scale, column
    with pt.table(str(casa), ack=False) as t:
        has_spectrum = "WEIGHT_SPECTRUM" in t.colnames()
    if has_spectrum:  # CASA weighs a half-flagged bin by its unflagged samples, as we do
        a, b = _column(ours, "WEIGHT_SPECTRUM"), _column(casa, "WEIGHT_SPECTRUM")
        np.testing.assert_allclose(a[~flags] / a[~flags].max(), b[~flags] / b[~flags].max())
    # CASA 6.7 writes no WEIGHT_SPECTRUM here: check ours against the input's flags directly
    used = ~_column(averaged["phased"], "FLAG")
    n_rows, n_chan, n_corr = used.shape
    unflagged = used.reshape(n_rows, n_chan // AVG_BIN, AVG_BIN, n_corr).sum(axis=2)
    weight = _column(averaged["phased"], "WEIGHT")[:, None, :]
    np.testing.assert_allclose(_column(ours, "WEIGHT_SPECTRUM"), unflagged * weight, rtol=1e-6)
    print(f"flagged bins {flags.mean():.3%}; CASA wrote WEIGHT_SPECTRUM: {has_spectrum}")


def test_averaging_a_whole_subband_smears_as_bridle_and_schwab_predict(averaged: dict) -> None:
    sources, images = averaged["sources"], averaged["images"]
    full_pos, pixel, _ = _found(images["full"], sources)
    whole_pos, _, _ = _found(images["whole"], sources)
    assert np.all(_offsets_pixels(whole_pos, full_pos, pixel) < 1.0)  # no shift, no mirror
    catalog = np.array([(s.ra_deg, s.dec_deg) for s in sources])
    assert np.all(_offsets_pixels(whole_pos, catalog, pixel) < 1.0)
    peaks = {name: _peaks(path, sources) for name, path in images.items()}
    ratio = peaks["whole"] / peaks["full"]
    with fits.open(images["full"]) as hdul:
        bmaj, bmin = hdul[0].header["BMAJ"] * 3600.0, hdul[0].header["BMIN"] * 3600.0
    with pt.table(f"{averaged['clean']}::SPECTRAL_WINDOW", ack=False) as t:
        width, freq = float(t.getcol("CHAN_WIDTH")[0, 0]), float(t.getcol("REF_FREQUENCY").mean())
    wide = width * AVG["n_channels"]
    radii = np.array([p[1] for p in SKY_PATTERN])

    def predicted(beam: float) -> np.ndarray:
        wide_peak = [bandwidth_smearing_peak(wide, freq, r, beam) for r in radii]
        narrow_peak = [bandwidth_smearing_peak(width, freq, r, beam) for r in radii]
        return np.array(wide_peak) / np.array(narrow_peak)

    low, high = predicted(bmin), predicted(bmaj)  # the radial beam lies between the two
    print(
        f"beam {bmaj:.1f} x {bmin:.1f} arcsec, channels {width / 1e6:.3f} -> {wide / 1e6:.2f} MHz;"
        f" radius {radii.tolist()} peak ratio {np.round(ratio, 4).tolist()}, predicted "
        f"{np.round(low, 4).tolist()} - {np.round(high, 4).tolist()}"
    )
    assert np.all(ratio > low - 0.02) and np.all(ratio < high + 0.02)
    assert ratio[np.argmax(radii)] < ratio[np.argmin(radii)]  # smearing grows with radius


def _peaks(fits_path: Path, sources: list[PointSource]) -> np.ndarray:
    """Return the image's peak near each source (Jy/beam)."""
    with fits.open(fits_path) as hdul, warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        image = np.asarray(hdul[0].data, dtype=np.float64).squeeze()
        wcs = WCS(hdul[0].header).celestial
    out = []
    for src in sources:
        x, y = wcs.world_to_pixel(SkyCoord(src.ra_deg * u.deg, src.dec_deg * u.deg))
        px, py = _peak_pixel(image, float(x), float(y))
        out.append(image[int(round(py)), int(round(px))])
    return np.array(out)


def test_the_radiometer_noise_of_the_copy_is_that_of_its_ms(averaged: dict) -> None:
    """The copy's radiometer noise is its MS's: exactly (natural), within 1% (Briggs).

    A third of the samples are flagged, partial bins too; each bin keeps its unflagged
    bandwidth, so the natural-weighting sum is unchanged, and the Briggs factor differs only
    by gridding at the bins' mean frequencies.
    """
    from dsa110_assets.imaging.radiometer import expected_image_noise

    ours, phased = averaged["ours"].path, averaged["phased"]
    natural = [expected_image_noise(ms, weighting="natural") for ms in (ours, phased)]
    assert natural[0] == pytest.approx(natural[1], rel=1e-6)
    briggs = [expected_image_noise(ms, image_size=1024, scale_arcsec=10.0) for ms in (ours, phased)]
    print(f"radiometer noise copy / MS: natural {natural[0] / natural[1]:.6f}, "
          f"Briggs 0.5 {briggs[0] / briggs[1]:.4f}")  # fmt: skip
    assert briggs[0] == pytest.approx(briggs[1], rel=0.01)
