"""Benchmark: a day's mosaic of 288 simulated snapshot images along one declination strip.

Simulates 288 consecutive 5-minute groups (24 h of RA, 1.25 deg apart) as small WSClean-like
images (default 256 x 256 pixels of 20 arcsec, 80 arcsec beam, 5 mJy noise, with -pb.fits
siblings) holding ~600 point sources of known flux, then mosaics the day. One TAN grid cannot
hold 24 h of RA (the bench shows the refusal), so the day is built as RA tiles (hourly by
default), each :func:`build_mosaic` call reading its images one at a time.

Prints the simulation time, the mosaic time, images/s, the per-stage times, the peak RSS of
the process (``resource.getrusage``), and a correctness figure: the recovered/true flux of
the sources well inside a tile. Everything is deleted unless ``--keep``.

Usage: ``python bench/mosaic.py [--images 288] [--size 256] [--cell 20] [--tile-deg 15]``
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np
from _common import peak_rss_mb, scratch_folder

from dsa110_assets.imaging.image_stats import find_peak
from dsa110_assets.mosaics import (
    GridError,
    build_mosaic,
    group_by_ra_tile,
    mosaic_grid,
    pb_sibling,
    write_simulated_image,
)
from dsa110_assets.timing import Stopwatch

STEP_DEG = 1.25  # RA between consecutive 5-minute groups


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=288)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--cell", type=float, default=20.0, help="arcsec")
    parser.add_argument("--dec", type=float, default=40.0)
    parser.add_argument("--sources", type=int, default=600)
    parser.add_argument("--tile-deg", type=float, default=15.0)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    rng = np.random.default_rng(11)
    half_width = args.size * args.cell / 3600 / 2
    src_ra = rng.uniform(0, 360, args.sources)
    src_dec = args.dec + rng.uniform(-0.8, 0.8, args.sources) * half_width
    src_flux = rng.uniform(0.1, 1.0, args.sources)
    sky = (src_ra, src_dec, src_flux)
    with scratch_folder("bench-mosaic-", args.dir, keep=args.keep) as root:
        images, ras = _simulate_images(root, args, sky, half_width)
        watch = Stopwatch()
        try:
            mosaic_grid(images)
            print("one TAN grid for the whole strip: accepted")
        except GridError as err:
            print(f"one TAN grid for the whole strip: refused ({err})")
        print(f"  (header pass over {len(images)} images: {watch.elapsed_s:.2f} s)")
        tiles = group_by_ra_tile(images, ras, tile_deg=args.tile_deg)
        results = _mosaic_tiles(root, args, tiles)
        _check_fluxes(args, sky, half_width, tiles, results)
    return 0


def _simulate_images(
    root: Path, args: argparse.Namespace, sky: tuple, half_width: float
) -> tuple[list[Path], list[float]]:
    src_ra, src_dec, src_flux = sky
    watch = Stopwatch()
    images, ras = [], []
    cos_dec = math.cos(math.radians(args.dec))
    for k in range(args.images):
        ra = (STEP_DEG * k) % 360.0
        d_ra = (src_ra - ra + 180.0) % 360.0 - 180.0
        near = np.abs(d_ra) * cos_dec < 1.5 * half_width
        path = root / "images" / f"2026-01-01T{k // 12:02d}:{5 * (k % 12):02d}:00-mer-image.fits"
        path.parent.mkdir(exist_ok=True)
        write_simulated_image(
            path,
            ra_deg=ra,
            dec_deg=args.dec,
            size=args.size,
            cell_arcsec=args.cell,
            sources=list(zip(src_ra[near], src_dec[near], src_flux[near], strict=True)),
            noise_jy=0.005,
            beam_arcsec=4 * args.cell,
            seed=k,
            pb_path=pb_sibling(path),
        )
        images.append(path)
        ras.append(ra)
    print(f"simulated {len(images)} images of {args.size}^2 px in {watch.elapsed_s:.1f} s")
    return images, ras


def _mosaic_tiles(root: Path, args: argparse.Namespace, tiles: dict) -> list:
    out = root / "mosaics"
    out.mkdir()
    stages: dict[str, float] = {}
    results = []
    rss_before = peak_rss_mb()
    watch = Stopwatch()
    for index, paths in tiles.items():
        result = build_mosaic(paths, out / f"2026-01-01_dec{args.dec:+.1f}_ra{index:02d}.fits")
        results.append(result)
        for key, value in result.timings_s.items():
            stages[key] = stages.get(key, 0.0) + value
    t_mosaic = watch.elapsed_s
    n_used = sum(r.n_images for r in results)
    pixels = sum(r.shape[0] * r.shape[1] for r in results)
    print(
        f"mosaicked {n_used} images into {len(results)} tiles ({pixels / 1e6:.1f} Mpx) in "
        f"{t_mosaic:.1f} s: {n_used / t_mosaic:.1f} images/s"
    )
    print("  stages (s): " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))
    print(
        f"  largest tile {max(r.shape for r in results)}, "
        f"median EFFNOISE {np.median([r.effective_noise_jy for r in results]) * 1e3:.2f} mJy"
    )
    print(f"peak RSS: {peak_rss_mb():.0f} MB (before mosaicking {rss_before:.0f} MB)")
    return results


def _check_fluxes(
    args: argparse.Namespace, sky: tuple, half_width: float, tiles: dict, results: list
) -> None:
    src_ra, src_dec, src_flux = sky
    ratios = []
    for result, (index, _) in zip(results, tiles.items(), strict=True):
        lo, hi = index * args.tile_deg + 1.0, (index + 1) * args.tile_deg - 1.0
        inside = (src_ra > lo) & (src_ra < hi) & (np.abs(src_dec - args.dec) < 0.4 * half_width)
        for ra, dec, flux in zip(src_ra[inside], src_dec[inside], src_flux[inside], strict=True):
            ratios.append(find_peak(result.path, ra, dec, 8 * args.cell)[2] / flux)
    r = np.array(ratios)
    print(
        f"flux recovered/true for {r.size} sources: median {np.median(r):.4f}, "
        f"5-95% {np.percentile(r, 5):.3f}..{np.percentile(r, 95):.3f}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
