"""Benchmark: normalize and register a 100,000-file backlog (6,250 groups, drifting names).

Prints files per second and database round trips per file for the batched pass
(``normalize_directory`` with a registry), against a baseline measured in the same run: the
per-file streaming path (``normalize_subband_on_ingest``, one transaction per file) on a
sample of the same data. Target: the whole folder in under 10 s on 2 cores. Since ingest
reads each file's ``time_array`` (to refuse files whose content is another observation than
their name), that target is out of reach: opening an HDF5 file costs ~0.2 ms and reading the
two values another ~0.3-0.5 ms. The figure that matters for the telescope is also printed:
the time per observing day of files (288 x 16).

Usage: ``python bench/normalize.py [--groups 6250] [--sample-groups 100] [--dir PATH]``
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
from pathlib import Path

from dsa110_assets.ingest import normalize_directory, normalize_subband_on_ingest
from dsa110_assets.ingest.samples import write_header_only_subband
from dsa110_assets.naming import epoch_to_group_id, group_id_to_epoch, subband_filename
from dsa110_assets.registry import Registry
from dsa110_assets.timing import Stopwatch

GROUP_CADENCE_S = 309  # 24 x 12.884902 s


def make_backlog(folder: Path, n_groups: int, seed: int = 1) -> list[str]:
    """Write header-only subband files in arrival order; return their names.

    Ingest reads each file's ``time_array``; names drift 0-2 s within a group, contents start
    at the observation's start.
    """
    rng = random.Random(seed)
    t0 = group_id_to_epoch("2025-01-15T00:00:00")
    written = []
    for g in range(n_groups):
        order = list(range(16))
        rng.shuffle(order)
        for sb in order:
            start = t0 + g * GROUP_CADENCE_S
            stamp = epoch_to_group_id(start + rng.randint(0, 2))
            name = subband_filename(stamp, sb)
            write_header_only_subband(folder / name, start)
            written.append(name)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=6250)
    parser.add_argument(
        "--sample-groups", type=int, default=100, help="groups pushed through the per-file baseline"
    )
    parser.add_argument("--dir", type=Path, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-normalize-", dir=args.dir))
    try:
        batch_dir, base_dir = root / "batch", root / "baseline"
        batch_dir.mkdir()
        base_dir.mkdir()

        t = Stopwatch()
        n_files = len(make_backlog(batch_dir, args.groups))
        created = t.elapsed_s
        sample = make_backlog(base_dir, args.sample_groups)
        print(f"backlog: {n_files} files in {args.groups} groups (created in {created:.1f} s)")

        # Baseline: the streaming path, one file and one transaction at a time.
        with Registry(root / "baseline.sqlite3") as registry:
            before = registry.round_trips
            t = Stopwatch()
            for name in sample:
                normalize_subband_on_ingest(base_dir / name, registry, input_dir=base_dir)
            base_s = t.elapsed_s
            base_trips = (registry.round_trips - before) / len(sample)
        base_rate = len(sample) / base_s

        # Batched: one pass over the whole folder.
        with Registry(root / "batch.sqlite3") as registry:
            t = Stopwatch()
            stats = normalize_directory(batch_dir, registry=registry)
            batch_s = t.elapsed_s
            registered = registry.query("SELECT COUNT(*) FROM subband_files")[0][0]
            pending = registry.query("SELECT COUNT(*) FROM processing_queue WHERE state='pending'")[
                0
            ][0]
        rate = n_files / batch_s
        trips = stats["db_round_trips"] / n_files

        ok = (
            stats["groups"] == args.groups
            and registered == n_files
            and pending == args.groups
            and stats["conflicts"] == 0
        )
        print(
            f"baseline (per-file ingest, {len(sample)} files): {base_rate:,.0f} files/s, "
            f"{base_trips:.2f} db round trips/file"
        )
        print(
            f"batched normalize_directory + registration: {batch_s:.2f} s for {n_files} files"
            f" = {rate:,.0f} files/s, {stats['db_round_trips']} db round trips "
            f"= {trips:.6f}/file"
        )
        print(
            f"  renamed {stats['files_renamed']}, groups {stats['groups']}, "
            f"registered {registered}, pending {pending}, conflicts {stats['conflicts']}"
        )
        print(
            f"speed-up vs baseline: {rate / base_rate:.1f}x; "
            f"target < 10 s: {'met' if batch_s < 10 else 'MISSED'}; "
            f"{batch_s / n_files * 288 * 16:.1f} s per observing day of files"
        )
        return 0 if ok else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
