"""Benchmark: a self-calibration round continued from the first image's model, or cleaned afresh.

Issue 15's lever for the self-calibration round (the target group's largest cost after
WSClean's first image): WSClean's ``-continue`` reads the first image's model, images the
residual (data minus ``MODEL_DATA``) in its first inversion and cleans on from there, so the
round needs fewer major iterations than a fresh clean of the self-calibrated data. What it
may cost: the first model was cleaned from phase-corrupted data, and its errors stay unless
the continued clean takes them out again.

Simulates one full-size target group (``bench/imaging_levers.py``'s: ``PRESETS["full"]``,
``--hours`` after today's 3C286 transit, noise, no corruptions, no interference), converts
it, writes the imaging copy at the image step's channel width and corrupts its
``CORRECTED_DATA`` with a known phase per antenna (an offset up to 20 deg plus a linear
drift up to 30 deg over the group: :mod:`dsa110_assets.simulation.ms_corruption`, which
``tests/test_selfcal.py`` uses too). Then, at the production settings: a reference image
of the uncorrupted ``DATA``; the first image of the corrupted data (model written back);
one phase self-calibration round (:func:`~dsa110_assets.calibration.selfcal.solve_selfcal`,
60 s) imaged twice, continued (``-continue``) and fresh, both reusing the first image's PSF
as the image step does.
Prints each run's time, major iterations and WSClean's own split, then the residual noise,
dynamic range and forced-photometry fluxes of the reference's S/N > 20 sources against the
reference.

Measured 2026-12-04 on the 2-core development machine: the continued round 34.8 s (2 major
iterations) against 55.2 s (4) fresh, but its residual noise 0.5738 mJy against 0.5470
(+4.9%; the reference 0.5262) and the worst bright source at 0.9887 of the reference against
0.9939; a second run 38.6 against 60.0 s, noise +5.0%: rejected (README, Speed section).

Usage: ``python bench/selfcal_continue.py [--hours 1.0] [--seed 8] [--dir /tmp] [--keep]``
"""

from __future__ import annotations

import argparse
import math
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from _common import scratch_folder, timed
from casacore import tables as pt
from imaging_levers import MIN_SNR, simulate_and_convert

from dsa110_assets.calibration.selfcal import solve_selfcal, write_selfcal_column
from dsa110_assets.imaging import (
    WSCleanParams,
    image_statistics,
    primary_beam_image,
    write_pb_products,
)
from dsa110_assets.imaging.imaging_ms import channel_bin, write_imaging_ms
from dsa110_assets.imaging.wsclean import wsclean_command
from dsa110_assets.photometry.forced import forced_photometry
from dsa110_assets.processing.image_step import MAX_CHANNEL_WIDTH_HZ
from dsa110_assets.simulation.ms_corruption import apply_antenna_phases, drift_phases
from resources.wsclean import WSCleanResource

PHASE_OFFSET_DEG = 20.0
PHASE_DRIFT_DEG = 30.0


@dataclass(frozen=True)
class Measured:
    """One image's numbers: residual noise, dynamic range, fluxes by source."""

    noise_jy: float
    dynamic_range: float
    fluxes: dict[str, tuple[float, float]]  # source -> (flux, error)


def main() -> int:
    """Run the benchmark and print its comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=1.0, help="after the transit")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    if not (math.isfinite(args.hours) and abs(args.hours) <= 12):
        parser.error("--hours must be within 12 of the transit")
    with scratch_folder("bench-selfcal-", args.dir, keep=args.keep) as root:
        ms, sources = simulate_and_convert(root, args)
        copy = root / "imaging.ms"
        write_imaging_ms(ms, copy, chan_bin=channel_bin(ms, MAX_CHANNEL_WIDTH_HZ))
        shutil.rmtree(ms)  # the copy is all that is imaged
        _corrupt_phases(copy)
        params = WSCleanResource().params_for(copy)
        images = root / "images"
        images.mkdir()
        results = _rounds(copy, images, params, sources)
        _compare(results)
    return 0


def _corrupt_phases(ms: Path, seed: int = 3) -> None:
    """Corrupt CORRECTED_DATA with a known phase per antenna: an offset plus a linear drift."""
    with pt.table(str(ms), ack=False) as main:
        times = np.unique(main.getcol("TIME"))
        # the antennas in the data (the ANTENNA table may list more): the draws of the runs
        # measured in the docstring
        n_antennas = int(max(main.getcol("ANTENNA1").max(), main.getcol("ANTENNA2").max())) + 1
    phases = drift_phases(
        n_antennas, times, offset_deg=PHASE_OFFSET_DEG, drift_deg=PHASE_DRIFT_DEG, seed=seed
    )
    apply_antenna_phases(ms, phases)


def _rounds(copy: Path, images: Path, params: WSCleanParams, sources: dict) -> dict[str, Measured]:
    """Image the reference, the first image, and the round continued and fresh."""
    out = {}
    _wsclean(copy, images, "reference", replace(params, data_column="DATA"))
    out["reference"] = _measure(copy, images, "reference", sources)
    first = replace(params, data_column="CORRECTED_DATA", save_model_to_ms=True)
    _wsclean(copy, images, "first", first)
    out["first image"] = _measure(copy, images, "first", sources)
    write_selfcal_column(copy, solve_selfcal(copy, mode="phase", solint_s=60.0))
    round_params = replace(first, data_column="SELFCAL_DATA")
    reuse = ("-reuse-psf", str(images / "first"))
    shutil.copy(images / "first-model.fits", images / "continued-model.fits")
    # continued first: it subtracts the first image's MODEL_DATA, which the fresh one rewrites
    _wsclean(copy, images, "continued", round_params, ("-continue", *reuse))
    out["round, continued"] = _measure(copy, images, "continued", sources)
    _wsclean(copy, images, "fresh", round_params, reuse)
    out["round, fresh"] = _measure(copy, images, "fresh", sources)
    return out


def _wsclean(
    ms: Path, images: Path, name: str, params: WSCleanParams, extra: tuple[str, ...] = ()
) -> None:
    """Run WSClean in ``images`` (``-continue`` needs ``{name}-model.fits`` where it runs)."""
    cmd = wsclean_command(ms, images / name, images, replace(params, extra_args=extra), "wsclean")
    seconds, run = timed(subprocess.run, cmd, capture_output=True, text=True, cwd=images)
    if run.returncode != 0:
        raise SystemExit(f"WSClean ({name}) failed:\n{run.stdout[-3000:]}")
    majors = re.search(r"(\d+) major iterations were performed", run.stdout)
    split = re.search(r"Inversion: .*", run.stdout)
    print(
        f"{name}: WSClean {seconds:.1f} s, {majors.group(1) if majors else '?'} major "
        f"iterations; {split.group(0) if split else ''}",
        flush=True,
    )


def _measure(ms: Path, images: Path, name: str, sources: dict) -> Measured:
    """Return the residual noise, the dynamic range and every source's forced flux."""
    image = images / f"{name}-image.fits"
    pb_path, _ = write_pb_products(image, primary_beam_image(ms, image))
    noise = image_statistics(images / f"{name}-residual.fits").noise_jy
    names = sorted(sources)
    positions = (names, [sources[n].ra_deg for n in names], [sources[n].dec_deg for n in names])
    fluxes = {
        m.source_id: (m.flux_jy, m.flux_err_jy)
        for m in forced_photometry(image, positions, pb_fits=pb_path)
        if m.skip_reason is None
    }
    return Measured(noise, image_statistics(image).peak_jy / noise, fluxes)


def _compare(results: dict[str, Measured]) -> None:
    ref = results["reference"]
    bright = sorted(s for s, (f, e) in ref.fluxes.items() if e > 0 and f / e > MIN_SNR)
    print(f"\nagainst the reference image ({len(bright)} sources with S/N > {MIN_SNR:g}):")
    for label, r in results.items():
        ratio = np.array([r.fluxes[s][0] / ref.fluxes[s][0] for s in bright if s in r.fluxes])
        print(
            f"  {label:<17} noise {r.noise_jy * 1e3:.4f} mJy ({r.noise_jy / ref.noise_jy:.4f}), "
            f"dynamic range {r.dynamic_range:.0f}, fluxes / reference median "
            f"{np.median(ratio):.4f}, range {ratio.min():.4f}-{ratio.max():.4f}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
