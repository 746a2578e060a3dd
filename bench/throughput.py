"""Benchmark: a backlog of full-size groups landing at once, drained by the real deployment.

Issue 15's throughput goal: machine time per full-size group under 100 s, so a backlog drains
at three times the rate the telescope makes it (12 groups an hour), with the whole machine
under 6 GB. The deployment is ``bench/pipeline.py``'s (``dagster-daemon run`` on the
repository's ``workspace.yaml`` and ``dagster.yaml``: queued runs, two per-group runs at once,
one WSClean at a time), tiers in a temporary folder.

First a calibrator group (3C286's transit today, as in ``bench/pipeline.py``) lands alone and
is processed, so the backlog is calibrated with its solution (``nearest``, the typical group)
rather than imaged as uncalibrated quick looks. Then ``--groups`` target groups (default 6,
consecutive 5-minute observations an hour later) land at once, and the clock runs from the
last file landing to the last image registered and the last run ended. Printed: each group's
image time after the landing, groups per hour and machine seconds per group (wall time x cores
/ groups, the cores being busy throughout), against the telescope's rate; and peak memory
(the machine's ``MemAvailable`` drop and the deployment's summed RSS, sampled every 0.5 s).

``--path baseline`` serves ``bench/_baseline_location.py`` instead (the path before issue
15), to measure its backlog rate the same way.

Usage: ``python bench/throughput.py [--groups 6] [--antennas 96] [--channels 48]
[--path fast|baseline] [--dir /tmp] [--timeout 7200] [--keep]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
from _common import scratch_folder, timed
from _deployment import MemorySampler, land_files, running_deployment, wait_for
from pipeline import (
    BASELINE_LOCATION,
    CALIBRATOR,
    GB,
    PATHS,
    Observation,
    _group_of,
    _image_registered,
    _merge_catalogs,
    _prepare_tiers,
    _print_settings,
    _sigterm_as_interrupt,
    _wait_until_sensing,
)

#: The telescope's rate: one group every 5 minutes.
REAL_TIME_GROUPS_PER_HOUR = 12.0
#: Issue 15's goal: a backlog drains at three times that.
GOAL_FACTOR = 3.0
MEMORY_GOAL_GB = 6.0


def main() -> int:
    from dsa110_assets.simulation import PRESETS

    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    full = PRESETS["full"]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=6, help="target groups landing at once")
    parser.add_argument("--antennas", type=int, default=full["n_antennas"])
    parser.add_argument("--channels", type=int, default=full["n_channels"])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--path", choices=list(PATHS), default="fast")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="parent of the temp folder")
    parser.add_argument("--timeout", type=float, default=7200.0, help="seconds for the backlog")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    if not 1 <= args.groups <= 48:
        parser.error(f"--groups must be 1..48, got {args.groups}")
    if not args.timeout > 0:
        parser.error(f"--timeout must be a positive number of seconds, got {args.timeout}")
    with (
        _sigterm_as_interrupt(),
        scratch_folder("bench-throughput-", args.dir, keep=args.keep) as root,
    ):
        calibrator, backlog = _simulate(root, args)
        _prepare_tiers(root, root / "truth" / "sky_catalog_nvss.csv")
        location = BASELINE_LOCATION if args.path == "baseline" else None
        print(f"path: {args.path} ({PATHS[args.path]})")
        with MemorySampler() as memory, running_deployment(root, location) as deployment:
            memory.pid = deployment.daemon.pid
            _print_settings(deployment)
            timed(_wait_until_sensing, deployment)
            seconds = _drain(deployment, [calibrator], args.timeout)
            print(f"calibrator group processed alone: image {max(seconds):.1f} s after landing")
            memory.restart()
            seconds = _drain(deployment, backlog, args.timeout)
            memory.sample()
            _report(seconds, memory)
    return 0


def _simulate(root: Path, args: argparse.Namespace) -> tuple[Observation, list[Observation]]:
    """Simulate the calibrator group and the backlog's consecutive target groups."""
    from dsa110_assets.instrument import FILE_DURATION_S
    from dsa110_assets.simulation import SimulationConfig, simulate_observations
    from dsa110_assets.simulation.rfi import RFIConfig
    from dsa110_assets.simulation.simulate import calibrator_transit
    from dsa110_assets.simulation.sky import get_calibrator

    source = get_calibrator(CALIBRATOR)
    first = calibrator_transit(source, datetime.now(UTC).date())
    first -= timedelta(seconds=FILE_DURATION_S / 2)
    catalogs, made = [], []
    for role, start, n_groups in (
        ("calibrator", first, 1),
        ("backlog", first + timedelta(hours=1), args.groups),
    ):
        config = SimulationConfig(
            output_dir=root / "staging" / role,
            truth_dir=root / "truth" / role,
            n_groups=n_groups,
            start=start,
            dec_deg=source.dec_deg,
            n_antennas=args.antennas,
            n_channels=args.channels,
            seed=args.seed + len(made),
            calibrator=CALIBRATOR,
            rfi=RFIConfig(),
        )
        seconds, sim = timed(simulate_observations, config)
        catalogs.append(sim.nvss_catalog_path)
        for group in sim.groups:
            size = sum(p.stat().st_size for p in group.files)
            made.append(
                Observation(role, group.start, list(group.files), group.has_calibrator, size)
            )
        print(f"simulated {n_groups} {role} group(s) in {seconds:.0f} s")
    _merge_catalogs(catalogs, root / "truth" / "sky_catalog_nvss.csv")
    os.sync()
    return made[0], made[1:]


def _drain(deployment, observations: list[Observation], timeout: float) -> list[float]:  # noqa: ANN001
    """Land ``observations`` together; return each image's seconds after the last landing.

    Waits for every image and then for every run of those groups to end.
    """
    landed = max(
        max(land_files(o.files, deployment.input_dir)) for o in observations
    )  # one after another, as fast as renames go
    deadline = time.monotonic() + timeout
    groups = [
        wait_for(
            lambda o=o: _group_of(deployment, [p.name for p in o.files]),
            "the files to be registered",
            timeout=max(1.0, deadline - time.monotonic()),
        )
        for o in observations
    ]
    seconds = [
        wait_for(
            lambda g=g: _image_registered(deployment, g),
            f"{g}'s image",
            timeout=max(1.0, deadline - time.monotonic()),
            poll_s=1.0,
        )
        - landed
        for g in groups
    ]

    def ended() -> bool:
        return all(
            all(r.dagster_run.is_finished for r in deployment.partition_runs(g)) for g in groups
        )

    wait_for(ended, "the runs to end", timeout=max(60.0, deadline - time.monotonic()))
    ends = [max(r.end_time or 0.0 for r in deployment.partition_runs(g)) for g in groups]
    seconds.append(max(ends) - landed)  # the last entry: the last run's end
    return seconds


def _report(seconds: list[float], memory: MemorySampler) -> None:
    """Print the images' times, the backlog's rate against the goal, and peak memory."""
    images, last_end = sorted(seconds[:-1]), seconds[-1]
    n, cores = len(images), os.cpu_count() or 1
    print(f"\nbacklog of {n} full-size groups landed at once:")
    print("  images registered at " + ", ".join(f"{s:.0f}" for s in images) + " s")
    print(f"  last image {images[-1]:.1f} s, last run ended {last_end:.1f} s after the landing")
    rate = n / images[-1] * 3600.0
    per_group = images[-1] / n  # the whole machine's wall time per group, every core busy
    goal_rate = REAL_TIME_GROUPS_PER_HOUR * GOAL_FACTOR
    print(
        f"  {rate:.1f} groups per hour, {rate / REAL_TIME_GROUPS_PER_HOUR:.2f}x the telescope's "
        f"{REAL_TIME_GROUPS_PER_HOUR:g} (goal {goal_rate:g}); machine time {per_group:.0f} s per "
        f"group on {cores} cores (goal under {3600 / goal_rate:.0f} s)"
    )
    print(
        f"  peak memory during the backlog: machine {memory.machine_peak / GB:.2f} GB in use "
        f"({memory.above_baseline / GB:.2f} GB above idle; goal under {MEMORY_GOAL_GB:g} GB), "
        f"deployment {memory.tree_peak / GB:.2f} GB (sum of RSS)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
