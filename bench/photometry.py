"""Benchmark: forced photometry of 1,000 catalog sources on one 2048 x 2048 image.

Builds a WSClean-like image (SIN, 4-axis, 4.5 x 3.5 pixel FWHM beam at PA 20 deg, correlated
noise, 1,000 sources at random sub-pixel positions) and its ``-pb.fits`` primary beam, then
times :func:`forced_photometry` on it (reading both files included) three times; target < 1 s.
Then times :func:`record_measurements` of the result, and :func:`metrics_for_all` over a
registry of ``--rows`` photometry rows (default one million: 10,000 sources x 100 epochs).

Usage: ``python bench/photometry.py [--sources 1000] [--size 2048] [--rows 1000000] [--dir /tmp]``
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np
from _common import scratch_folder
from astropy.io import fits
from astropy.wcs import WCS
from scipy.signal import fftconvolve

from dsa110_assets.photometry import (
    SourcePositions,
    flag_candidates,
    forced_photometry,
    metrics_for_all,
    record_measurements,
)
from dsa110_assets.registry import Registry
from dsa110_assets.timing import Stopwatch

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def _header(n: int, cell_deg: float, bmaj: float, bmin: float, bpa: float) -> fits.Header:
    h = fits.Header()
    h.update(
        NAXIS=4, NAXIS1=n, NAXIS2=n, NAXIS3=1, NAXIS4=1,
        CTYPE1="RA---SIN", CTYPE2="DEC--SIN", CTYPE3="FREQ", CTYPE4="STOKES",
        CRVAL1=180.0, CRVAL2=40.0, CRVAL3=1.405e9, CRVAL4=1.0,
        CRPIX1=n / 2 + 1, CRPIX2=n / 2 + 1, CRPIX3=1.0, CRPIX4=1.0,
        CDELT1=-cell_deg, CDELT2=cell_deg, CDELT3=1.875e8, CDELT4=1.0,
        CUNIT1="deg", CUNIT2="deg", CUNIT3="Hz",
        BMAJ=bmaj, BMIN=bmin, BPA=bpa, BUNIT="JY/BEAM",
    )  # fmt: skip
    return h


def _gaussian(dx: np.ndarray, dy: np.ndarray, maj_px: float, min_px: float, pa_deg: float):
    """Beam on a pixel grid whose x axis points west (RA increasing to the left)."""
    pa = math.radians(pa_deg)
    east, north = -dx, dy
    along = east * math.sin(pa) + north * math.cos(pa)
    across = east * math.cos(pa) - north * math.sin(pa)
    return np.exp(
        -0.5 * ((along * FWHM_PER_SIGMA / maj_px) ** 2 + (across * FWHM_PER_SIGMA / min_px) ** 2)
    )


def make_image(folder: Path, n: int, n_sources: int, rng: np.random.Generator):
    cell = 4.0 / 3600.0
    maj_px, min_px, bpa = 4.5, 3.5, 20.0
    header = _header(n, cell, maj_px * cell, min_px * cell, bpa)
    sigma = 1e-3
    k = np.arange(-12, 13, dtype=float)
    kx, ky = np.meshgrid(k, k)
    kernel = _gaussian(kx, ky, maj_px / math.sqrt(2), min_px / math.sqrt(2), bpa)
    kernel /= np.sqrt((kernel**2).sum())
    data = fftconvolve(rng.normal(0.0, sigma, (n, n)), kernel, mode="same")
    x = rng.uniform(20, n - 21, n_sources)
    y = rng.uniform(20, n - 21, n_sources)
    flux = 10 ** rng.uniform(-2.0, 0.0, n_sources)
    stamp = np.arange(-10, 11)
    for xi, yi, s in zip(x, y, flux, strict=True):
        cx, cy = int(round(xi)), int(round(yi))
        sx, sy = np.meshgrid(stamp + cx, stamp + cy)
        data[cy - 10 : cy + 11, cx - 10 : cx + 11] += s * _gaussian(
            sx - xi, sy - yi, maj_px, min_px, bpa
        )
    yy, xx = np.mgrid[0:n, 0:n]
    pb = np.exp(-0.5 * (np.hypot(xx - n / 2, yy - n / 2) / (0.45 * n)) ** 2)
    image = folder / "bench-image.fits"
    pb_path = folder / "bench-pb.fits"
    fits.PrimaryHDU(data[None, None].astype(np.float32), header).writeto(image, overwrite=True)
    fits.PrimaryHDU(pb[None, None].astype(np.float32), header).writeto(pb_path, overwrite=True)
    ra, dec = WCS(header).celestial.pixel_to_world_values(x, y)
    ids = [f"SRC{i:05d}" for i in range(n_sources)]
    return image, pb_path, SourcePositions.from_arrays(ids, ra, dec, flux), flux


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=1000)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    args = parser.parse_args()
    with scratch_folder("bench-photometry-", args.dir) as folder:
        rng = np.random.default_rng(0)
        image, pb_path, positions, flux = make_image(folder, args.size, args.sources, rng)
        for attempt in range(3):
            started = Stopwatch()
            res = forced_photometry(image, positions, pb_fits=pb_path)
            elapsed = started.elapsed_s
            print(f"forced_photometry run {attempt + 1}: {len(res)} sources on "
                  f"{args.size}x{args.size} in {elapsed:.3f} s")  # fmt: skip
        ok = [m for m in res if m.ok]
        got = np.array([m.flux_jy * m.pb_response for m in ok])
        true = flux[[int(m.source_id[3:]) for m in ok]]
        err = np.array([m.flux_err_jy * m.pb_response for m in ok])
        pull = (got - true) / err
        print(f"  measured {len(ok)}, skipped {len(res) - len(ok)}; (measured - true) / error:"
              f" median |pull| {np.median(np.abs(pull)):.3f} (0.674 for Gaussian errors),"
              f" {np.mean(np.abs(pull) < 3):.1%} within 3 (the rest: blends of random"
              f" neighbours, no joint fit)")  # fmt: skip

        registry = Registry(folder / "pipeline.sqlite3")
        started = Stopwatch()
        record_measurements(registry, res, image_path=str(image), group_id="g",
                            mjd=60000.0, catalog="nvss")  # fmt: skip
        print(f"record_measurements: {len(ok)} rows in {started.elapsed_s:.3f} s")

        n_src = max(1, args.rows // 100)
        epochs = args.rows // n_src
        ids = np.repeat([f"J{i:06d}" for i in range(n_src)], epochs)
        mjd = np.tile(60000.0 + np.arange(epochs), n_src)
        fl = rng.normal(1.0, 0.01, ids.size)
        er = np.full(ids.size, 0.01)
        started = Stopwatch()
        with registry.transaction() as conn:
            conn.executemany(
                "INSERT INTO photometry (source_id, ra_deg, dec_deg, image_path, mjd, flux_jy,"
                " flux_err_jy, created_at) VALUES (?, 0, 0, ?, ?, ?, ?, 0)",
                zip(ids.tolist(), (f"/i/{int(m)}.fits" for m in mjd), mjd.tolist(),
                    fl.tolist(), er.tolist(), strict=True),
            )  # fmt: skip
        print(f"filled {ids.size} photometry rows in {started.elapsed_s:.1f} s")
        for attempt in range(3):
            started = Stopwatch()
            table = metrics_for_all(registry, min_epochs=3)
            elapsed = started.elapsed_s
            print(f"metrics_for_all run {attempt + 1}: {len(table)} sources from"
                  f" {ids.size + len(ok)} rows in {elapsed:.2f} s")  # fmt: skip
        started = Stopwatch()
        selection = flag_candidates(table)
        print(f"flag_candidates: {len(selection.candidates)} of {len(table)} flagged"
              f" (eta > {selection.eta_threshold:.2f}, V > {selection.v_threshold:.4f})"
              f" in {started.elapsed_s:.2f} s")  # fmt: skip
        registry.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
