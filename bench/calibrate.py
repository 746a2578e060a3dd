"""Benchmark: solve, write and apply calibration on one full-size DSA-110 group.

Simulates (or reuses, if present under ``--workdir``) a full-size group: 96 antennas,
16 subbands x 48 channels, 24 integrations, 3C286 at transit with background sources, noise
and corruptions; converts it to a Measurement Set with ``convert_group``; then times, in this
process, ``solve_calibrator`` (bandpass + gains, one pass over the MS), writing the B and G
tables, and ``apply_calibration`` (CORRECTED_DATA, FLAG, WEIGHT). Prints seconds per stage,
rows per second, peak RSS and the solver's own breakdown. Target: solve + apply < 30 s on
2 cores; the existing pipeline spends 45 s in CASA (bandpass 30 s, gaincal 11 s, apply 4 s).

Usage: ``python bench/calibrate.py [--workdir /tmp/dsa110-bench-cal] [--seed 7]``
"""

from __future__ import annotations

import argparse
import resource
import shutil
from pathlib import Path

from dsa110_assets.calibration import (
    apply_calibration,
    solve_calibrator,
    write_bandpass_table,
    write_gain_table,
)
from dsa110_assets.conversion import convert_group
from dsa110_assets.naming import parse_subband_filename
from dsa110_assets.simulation import PRESETS, SimulationConfig, simulate_observations
from dsa110_assets.simulation.sky import get_calibrator
from dsa110_assets.timing import Stopwatch

CASA_SECONDS = {"bandpass": 30.0, "gaincal": 11.0, "applycal": 4.0}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def prepare(workdir: Path, seed: int) -> Path:
    """Return the full-size MS under ``workdir`` (simulated and converted unless already there)."""
    ms = workdir / "group.ms"
    if ms.exists():
        print(f"reusing {ms}")
        return ms
    t = Stopwatch()
    sim = simulate_observations(
        SimulationConfig(
            output_dir=workdir / "incoming",
            truth_dir=workdir / "truth",
            seed=seed,
            **PRESETS["full"],
        )
    )
    t_sim = t.elapsed_s
    files = {parse_subband_filename(p.name).subband: p for p in sim.groups[0].files}
    t = Stopwatch()
    convert_group(files, ms, tmpfs_dir=None, scratch_dir=workdir / "scratch", durable=False)
    print(f"simulated in {t_sim:.1f} s, converted in {t.elapsed_s:.1f} s")
    shutil.rmtree(workdir / "incoming", ignore_errors=True)  # the MS is all we need
    return ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/dsa110-bench-cal"))
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    ms = prepare(args.workdir, args.seed)
    rss_before = _peak_rss_mb()
    calibrator = get_calibrator("3C286")

    t = Stopwatch()
    solution = solve_calibrator(ms, calibrator)
    t_solve = t.elapsed_s
    rss_solve = _peak_rss_mb()

    tables = args.workdir / "caltables"
    t = Stopwatch()
    bp = write_bandpass_table(tables / "bench.B", solution, ms, overwrite=True)
    g = write_gain_table(tables / "bench.G", solution, ms, overwrite=True)
    t_write = t.elapsed_s

    t = Stopwatch()
    result = apply_calibration(ms, bp, g)
    t_apply = t.elapsed_s

    rows = int(solution.stats["n_rows"])
    total = t_solve + t_apply
    casa = sum(CASA_SECONDS.values())
    print(f"MS: {ms} ({rows} rows, {solution.chan_freq_hz.size} channels, 2 pols)")
    print(f"refant {solution.refant_name}, {int(solution.stats['n_antennas_solved'])} antennas")
    print(f"solve  {t_solve:7.2f} s  ({rows / t_solve:,.0f} rows/s)")
    breakdown = ", ".join(
        f"{k} {solution.stats[k]:.2f}" for k in ("read_s", "model_s", "reduce_s", "solve_s")
    )
    print(f"       {breakdown}")
    print(f"write  {t_write:7.2f} s  (B + G tables)")
    print(f"apply  {t_apply:7.2f} s  ({rows / t_apply:,.0f} rows/s)")
    print("       " + ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items()))
    print(
        f"solve + apply {total:.1f} s (target < 30 s; CASA in the existing pipeline: {casa:.0f} s)"
    )
    print(
        f"peak RSS: {rss_before:.0f} MB before, {rss_solve:.0f} MB after solve, "
        f"{_peak_rss_mb():.0f} MB after apply (the process also simulated/converted if it did)"
    )
    print("note: shared 2-core machine; other jobs may inflate these figures")


if __name__ == "__main__":
    main()
