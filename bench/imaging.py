"""Benchmark: WSClean itself against the platform's work around it, on one simulated group.

Simulates one group (default 64 antennas, 16 subbands x 16 channels, 24 integrations, 3C286,
40 background sources, noise, no corruptions), converts it, then times each imaging step:

* separately: ``rephase`` (every row to the central field's phase centre, in place: a one-off
  I/O pass over the MS, proportional to its size, not to the image) and
  ``expected_image_noise`` (a quality figure computed once per MS, also one pass over it);
* overhead: ``choose_image_geometry``, ``image_statistics`` (image and residual),
  ``primary_beam_image`` + ``write_pb_products``, ``make_thumbnail`` + ``thumbnail_markdown``,
  and the runner's own cost (the wall time of ``run_wsclean`` minus
  WSClean's process time);
* WSClean: the subprocess, with the geometry chosen for the MS (4 pixels per beam, twice the
  primary-beam FWHM, capped at ``--max-size``), Briggs 0.5, 2000 iterations.

Prints every figure and the ratio overhead / WSClean (target < 5%). Everything generated is
deleted unless ``--keep``.

Usage: ``python bench/imaging.py [--antennas 64] [--channels 16] [--max-size 4096] [--dir /tmp]``
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import scratch_folder, timed

from dsa110_assets.conversion import convert_group
from dsa110_assets.imaging import (
    WSCleanParams,
    choose_image_geometry,
    expected_image_noise,
    image_statistics,
    make_thumbnail,
    phase_to_common_centre,
    primary_beam_image,
    run_wsclean,
    thumbnail_markdown,
    write_pb_products,
)
from dsa110_assets.naming import parse_subband_filename
from dsa110_assets.simulation import SimulationConfig, simulate_observations
from dsa110_assets.timing import Stopwatch


def _timed(label: str, timings: dict[str, float], func, *args, **kwargs):
    seconds, value = timed(func, *args, **kwargs)
    timings[label] = seconds
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--antennas", type=int, default=64)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--max-size", type=int, default=4096)
    parser.add_argument("--niter", type=int, default=2000)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    with scratch_folder("bench-imaging-", args.dir, keep=args.keep) as root:
        ms = _simulate_and_convert(root, args)
        _report(_time_steps(root, ms, args))
    return 0


def _simulate_and_convert(root: Path, args: argparse.Namespace) -> Path:
    watch = Stopwatch()
    sim = simulate_observations(
        SimulationConfig(
            output_dir=root / "incoming",
            truth_dir=root / "truth",
            n_groups=1,
            n_antennas=args.antennas,
            n_channels=args.channels,
            seed=7,
            n_background_sources=40,
            corruptions=False,
        )
    )
    files = {parse_subband_filename(p.name).subband: p for p in sim.groups[0].files}
    ms = root / "ms" / "group.ms"
    conversion = convert_group(files, ms, tmpfs_dir=None, scratch_dir=root / "scratch")
    print(
        f"group: {args.antennas} antennas, 16 x {args.channels} channels, "
        f"{conversion.n_rows} rows, MS {conversion.size_bytes / 1e6:.0f} MB "
        f"(simulated and converted in {watch.elapsed_s:.1f} s)"
    )
    return ms


def _time_steps(root: Path, ms: Path, args: argparse.Namespace) -> dict:
    overhead: dict[str, float] = {}
    separate: dict[str, float] = {}
    rephase = _timed("rephase", separate, phase_to_common_centre, ms)
    geometry = _timed(
        "choose_image_geometry", overhead, choose_image_geometry, ms, max_size=args.max_size
    )
    print(
        f"image: {geometry.size} px at {geometry.scale_arcsec} arcsec "
        f"({geometry.fov_deg:.2f} deg{', capped' if geometry.capped else ''})"
    )
    params = WSCleanParams(
        size=geometry.size,
        scale_arcsec=geometry.scale_arcsec,
        niter=args.niter,
        auto_mask=None,
        data_column="DATA",
    )
    run_total, result = timed(run_wsclean, ms, root / "images", f"group-{rephase.field_name}",
                              params)  # fmt: skip
    overhead["run_wsclean (excluding WSClean)"] = run_total - result.duration_s
    stats = _timed("image_statistics (image)", overhead, image_statistics, result.image)
    _timed("image_statistics (residual)", overhead, image_statistics, result.residual)
    pb = _timed("primary_beam_image", overhead, primary_beam_image, ms, result.image)
    _timed("write_pb_products", overhead, write_pb_products, result.image, pb)
    png = _timed("make_thumbnail", overhead, make_thumbnail, result.image, root / "thumb.png")
    markdown = _timed("thumbnail_markdown", overhead, thumbnail_markdown, png)
    expected = _timed(
        "expected_image_noise",
        separate,
        expected_image_noise,
        ms,
        data_column="DATA",
        image_size=geometry.size,
        scale_arcsec=geometry.scale_arcsec,
    )
    return {
        "wsclean_s": result.duration_s,
        "overhead": overhead,
        "separate": separate,
        "stats": stats,
        "expected": expected,
        "markdown": markdown,
    }


def _report(figures: dict) -> None:
    wsclean_s, overhead, separate = figures["wsclean_s"], figures["overhead"], figures["separate"]
    print(f"\n{'step':40s} {'seconds':>9s}")
    print(f"{'WSClean (subprocess)':40s} {wsclean_s:9.2f}")
    for label, seconds in overhead.items():
        print(f"{label:40s} {seconds:9.2f}")
    total = sum(overhead.values())
    print(f"{'overhead total':40s} {total:9.2f}")
    for label, seconds in separate.items():
        print(f"{label + ' (separate)':40s} {seconds:9.2f}")
    print(f"\noverhead / WSClean = {100 * total / wsclean_s:.1f}% (target < 5%)")
    print(f"overhead + rephase / WSClean = {100 * (total + separate['rephase']) / wsclean_s:.1f}%")
    stats, expected = figures["stats"], figures["expected"]
    print(
        f"image noise {1e3 * stats.noise_jy:.3f} mJy, radiometer (Briggs 0.5) "
        f"{1e3 * expected:.3f} mJy, peak {stats.peak_jy:.2f} Jy, "
        f"thumbnail markdown {len(figures['markdown']) / 1e3:.0f} kB"
    )


if __name__ == "__main__":
    raise SystemExit(main())
