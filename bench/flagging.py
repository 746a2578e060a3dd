"""Benchmark: flag one full-size DSA-110 group, against its conversion measured in the same run.

Simulates a full-size group (``PRESETS["full"]``: 96 antennas, 16 subbands x 48 channels,
24 integrations) with the simulator's interference (narrowband transmitters, broadband
bursts, a bad channel, a broken receiver), converts it with the pipeline's converter
(timed: the baseline), then runs the flagging step's core
(:func:`dsa110_assets.flagging.find.find_flags` and the two writes) with 1 and 2 worker
processes, and AOFlagger's own generic strategy (``generic-default.lua`` from the wheel) as
a second reference. Each flagging run starts from the converter's flags. It prints the
seconds, the ratio to the conversion, peak memory (this process and the largest worker),
and the score against the simulator's record: the fraction of injected samples flagged and
of clean samples flagged (targets >= 95 % and <= 5 %). ``--image`` also times WSClean at the
production settings on the flagged MS's imaging copy, as the image step makes it, so the
flagging can be put against the group's processing time (conversion + flagging + the
imaging copy + imaging).

The flagging workers are spawned processes, which import the parent's main module; in
the pipeline that is Dagster's (``python -m dagster``, which multiprocessing skips), so this
script imports the simulator and the converter inside :func:`main`, keeping its workers'
start-up what the pipeline's is (the flagging modules alone, about 0.6 s).

Usage: ``python bench/flagging.py [--dir /tmp] [--seed 7] [--antennas 96] [--image] [--keep]``
"""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

import numpy as np
from _common import peak_rss_mb, scratch_folder, timed

from dsa110_assets.flagging.baseline_blocks import read_all_flags
from dsa110_assets.flagging.find import STEPS, find_flags, write_step_flags
from dsa110_assets.flagging.ms_layout import FlagLayout
from dsa110_assets.flagging.policy import FlaggingPolicy


def _children_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


def _generic_strategy() -> Path:
    import aoflagger

    libs = Path(aoflagger.__file__).resolve().parent / "aoflagger.libs"
    return libs / "aoflagger" / "strategies" / "generic-default.lua"


def _flag(ms: Path, policy: FlaggingPolicy, pristine: np.ndarray) -> tuple[float, np.ndarray]:
    """Flag ``ms`` from the converter's flags; return the seconds and the final flags."""
    from casacore import tables as pt

    layout = FlagLayout.from_ms(ms)
    with pt.table(str(ms), readonly=False, ack=False) as main:
        main.putcol("FLAG", pristine)
    seconds, findings = timed(find_flags, ms, policy)
    for step in STEPS:
        extra, _ = timed(write_step_flags, ms, findings, step)
        seconds += extra
    return seconds, read_all_flags(str(ms), layout)


def _score(final: np.ndarray, truth: np.ndarray, existing: np.ndarray, is_auto: np.ndarray):
    """Fractions of injected and of clean cross-correlation samples flagged."""
    cross = ~is_auto
    f, t, e = final[:, cross], truth[:, cross], existing[:, cross]
    clean = ~t & ~e
    return float(f[t].mean()), float(f[clean].mean())


def _truth_mask(truth_path: Path, ms: Path, layout: FlagLayout) -> np.ndarray:
    """Return the simulator's record as (n_times, n_baselines, n_band_chan), like the flags."""
    from dsa110_assets.simulation.rfi import load_rfi_record, ms_rfi_mask

    record = load_rfi_record(truth_path)
    rows = ms_rfi_mask(record, 0, ms)  # (n_rows, n_chan) in MS row order
    out = np.empty((layout.n_times, layout.n_baselines, layout.n_band_chan), dtype=bool)
    nc = layout.n_chan
    for position, block in enumerate(layout.band_order):
        first = int(block) * layout.rows_per_block
        part = rows[first : first + layout.rows_per_block]
        out[:, :, position * nc : (position + 1) * nc] = part.reshape(
            layout.n_times, layout.n_baselines, nc
        )
    return out


def main() -> int:
    """Run the benchmark and print its table."""
    from dsa110_assets.conversion.convert import convert_group
    from dsa110_assets.naming import parse_subband_filename
    from dsa110_assets.simulation import PRESETS, SimulationConfig, simulate_observations
    from dsa110_assets.simulation.rfi import RFIConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=None, help="scratch parent folder (default: /tmp)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--antennas", type=int, default=PRESETS["full"]["n_antennas"])
    parser.add_argument("--image", action="store_true", help="also time WSClean on the MS")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    with scratch_folder("bench-flagging-", args.dir, keep=args.keep) as root:
        cfg = SimulationConfig(
            output_dir=root / "incoming",
            truth_dir=root / "truth",
            n_antennas=args.antennas,
            n_channels=PRESETS["full"]["n_channels"],
            seed=args.seed,
            rfi=RFIConfig(),
        )
        sim_s, sim = timed(simulate_observations, cfg)
        files = {parse_subband_filename(p.name).subband: p for p in sim.groups[0].files}
        ms = root / "group.ms"
        convert_s, _ = timed(convert_group, files, ms, tmpfs_dir=None, scratch_dir=root / "scratch")
        from casacore import tables as pt

        with pt.table(str(ms), ack=False) as main:
            pristine = main.getcol("FLAG")
        layout = FlagLayout.from_ms(ms)
        existing = read_all_flags(str(ms), layout)
        truth = _truth_mask(sim.truth_path, ms, layout)
        print(f"simulated {len(files)} subbands in {sim_s:.1f} s; converted in {convert_s:.1f} s")
        print(f"{layout.n_baselines} baselines x {layout.n_times} x {layout.n_band_chan} channels")
        print(f"{'run':<34}{'s':>8}{'/convert':>10}{'rfi flagged':>13}{'clean flagged':>15}")
        runs = [
            ("dsa110 strategy, 1 worker", FlaggingPolicy(workers=1)),
            ("dsa110 strategy, 2 workers", FlaggingPolicy(workers=2)),
            ("generic-default, 2 workers", FlaggingPolicy(workers=2, strategy=_generic_strategy())),
            ("data-quality only", FlaggingPolicy(aoflagger=False, workers=2)),
        ]
        for label, policy in runs:
            seconds, final = _flag(ms, policy, pristine)
            hit, clean = _score(final, truth, existing, layout.is_auto)
            print(
                f"{label:<34}{seconds:>8.1f}{seconds / convert_s:>10.2f}{hit:>12.1%}{clean:>15.2%}"
            )
        if args.image:
            # the flags in the MS are the last run's: flag again with the pipeline's setting
            seconds, _ = _flag(ms, FlaggingPolicy(workers=2), pristine)
            versions_s = _versions(ms)
            print(f"flag versions: 3 saves as the flagging step makes them, {versions_s:.1f} s")
            _image(ms, root, convert_s, seconds + versions_s)
        print(f"peak memory: this process {peak_rss_mb():.0f} MB, largest worker "
              f"{_children_peak_mb():.0f} MB")  # fmt: skip
    return 0


def _versions(ms: Path) -> float:
    """Time the flag versions the flagging step saves (before it, between steps, after it)."""
    from dsa110_assets.flagging.versions import delete_flag_version, save_flag_version

    names = ("bench_before_flagging", "bench_before_aoflagger", "bench_flagged")
    seconds = sum(timed(save_flag_version, ms, name, "bench")[0] for name in names)
    for name in names:
        delete_flag_version(ms, name)
    return seconds


def _image(ms: Path, root: Path, convert_s: float, flag_s: float) -> None:
    """Time the rest of the group on the flagged MS as the image step makes it.

    The imaging copy (every integration phased to the central field, channels averaged up to
    the resource's ``max_channel_width_hz``), then WSClean at the production settings on it.
    Prints flagging's share of the group's processing time (conversion + flagging, with its
    flag versions, + the copy + imaging), the issue's measure (target: under 15%).
    Self-calibration, which the image step adds on calibrated groups, is left out: this
    group is not calibrated, so the share printed is the larger one.
    """
    from dsa110_assets.imaging.imaging_ms import channel_bin, write_imaging_ms
    from dsa110_assets.imaging.wsclean import run_wsclean
    from resources.wsclean import WSCleanResource

    resource = WSCleanResource()
    width = resource.max_channel_width_hz
    chan_bin = 1 if width is None else channel_bin(ms, width)
    copy_s, copy = timed(write_imaging_ms, ms, root / "imaging.ms", chan_bin=chan_bin)
    params = resource.params_for(copy.path, data_column="DATA")
    image_s, _ = timed(run_wsclean, copy.path, root / "images", "bench", params)
    group_s = convert_s + flag_s + copy_s + image_s
    print(f"imaging copy ({chan_bin} channels averaged) {copy_s:.1f} s, WSClean (production "
          f"settings, {params.size} px) {image_s:.1f} s")  # fmt: skip
    print(f"group: conversion + flagging + imaging copy + imaging = {group_s:.1f} s; flagging "
          f"adds {flag_s / (group_s - flag_s):.1%} to the rest (target < 15%)")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
