"""Benchmark: what the number of ``group_id`` partitions costs the sensors and the UI.

Builds one Dagster instance (SQLite storage in a temporary ``DAGSTER_HOME``) and grows its
``group_id`` partitions to each size in ``--sizes`` (newest groups first, one every 300 s,
added in batches of 10,000), with ``--materialized`` of the newest groups materialized
(``subband_group``, runless events) and a registry holding every group as ``completed``.
At each size it times, median of ``--repeat``:

* the partition part of an incoming-sensor tick: ``has_dynamic_partition`` for 10 ready
  groups (what ``sensors/incoming.py`` asks per tick) and ``get_dynamic_partitions``;
* a ``partition_retirement_sensor`` evaluation (all keys, the registry's states, the runs);
* the UI's queries through Dagster GraphQL, served by a code server of ``workspace.yaml``
  as ``dagster dev`` does: the asset's partition keys (``partitionKeysByDimension``), its
  partition stats (``partitionStats``: the asset graph) and its partition statuses
  (``assetPartitionStatuses``: the asset page's partition bar);
* applying a retirement tick's deletions as the daemon does (``has_dynamic_partition`` +
  ``delete_dynamic_partition`` per key) for ``--delete-sample`` keys, per 1,000 keys, then
  restoring them.

The design's bound is the retention: ``288 x retain_days`` partitions (4,032 at 14 days); the
same figures at that size are printed first and every size is shown as a ratio to it.

Usage: ``python bench/partitions.py [--sizes 1000,10000,100000] [--retain-days 14]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsa110_assets.timing import Stopwatch

ROOT = Path(__file__).resolve().parents[1]
CADENCE_S = 300
END_EPOCH = 1_798_761_600  # 2027-01-01T00:00:00 UTC, the newest group
READY_PER_TICK = 10
ASSET = "subband_group"

KEYS_QUERY = """
query Keys($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode { partitionKeysByDimension { name partitionKeys } }
  }
}"""
STATS_QUERY = """
query Stats($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      partitionStats { numMaterialized numPartitions numFailed numMaterializing }
    }
  }
}"""
STATUS_QUERY = """
query Statuses($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      assetPartitionStatuses {
        ... on DefaultPartitionStatuses {
          materializedPartitions failedPartitions materializingPartitions
          unmaterializedPartitions
        }
      }
    }
  }
}"""


def median_s(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = Stopwatch()
        fn()
        times.append(t0.elapsed_s)
    return statistics.median(times)


def group_keys(n: int) -> list[str]:
    """Return the newest ``n`` group ids ending at ``END_EPOCH``, newest first."""
    from dsa110_assets.naming import epoch_to_group_id

    return [epoch_to_group_id(END_EPOCH - CADENCE_S * i) for i in range(n)]


def fill_registry(db_path: Path, keys: list[str]) -> None:
    """Every key as a ``completed`` processing_queue row (what retirement reads)."""
    from dsa110_assets.registry import Registry

    with Registry(db_path) as registry:
        registry.conn.executemany(
            "INSERT OR IGNORE INTO processing_queue(group_id, state, received_at, last_update)"
            " VALUES (?, 'completed', 0, 0)",
            [(k,) for k in keys],
        )
        registry.conn.commit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="partition counts")
    parser.add_argument("--retain-days", type=float, default=14.0)
    parser.add_argument("--materialized", type=int, default=500, help="newest keys materialized")
    parser.add_argument(
        "--delete-sample", type=int, default=200, help="retired keys whose deletion is timed"
    )
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})

    home = Path(tempfile.mkdtemp(prefix="bench-partitions-"))
    try:
        return run(args, sizes, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def run(args: argparse.Namespace, sizes: list[int], home: Path) -> int:
    """Run the benchmark in ``home`` (a temporary folder, removed by :func:`main`)."""
    _point_environment_at(home, args)
    import dagster as dg
    from dagster_graphql.test.utils import define_out_of_process_workspace, execute_dagster_graphql

    from dsa110_assets.partition_retirement import RetentionPolicy
    from resources.pipeline import PipelineResource

    policy = RetentionPolicy(retain_days=args.retain_days)
    bound = policy.expected_partitions
    sizes = sorted({bound, *sizes})
    all_keys = group_keys(max(sizes))
    variables = {"key": {"path": [ASSET]}}
    rows: list[dict[str, float]] = []
    print(
        f"DAGSTER_HOME {home / 'dagster_home'} (SQLite); design bound {bound} partitions "
        f"(288 x {args.retain_days:g} days); {args.materialized} newest materialized; "
        f"median of {args.repeat}"
    )
    with dg.DagsterInstance.get() as instance:
        t0 = Stopwatch()
        for key in all_keys[: args.materialized]:
            instance.report_runless_asset_event(
                dg.AssetMaterialization(asset_key=ASSET, partition=key)
            )
        print(f"{args.materialized} materializations written in {t0.elapsed_s:.1f} s")
        workspace = define_out_of_process_workspace(str(ROOT / "workspace.yaml"), None, instance)
        with workspace:

            def gql(query: str) -> dict:
                """Run one GraphQL request with a fresh request context.

                The webserver makes one per request (its loaders cache partition keys within a
                request only).
                """
                return execute_dagster_graphql(
                    workspace.create_request_context(), query, variables
                ).data

            bench = _Bench(args, instance, PipelineResource(), policy, gql, all_keys)
            have = 0
            for size in sizes:
                rows.append(bench.measure(have, size))
                have = size
    _print_ratios(rows, bound)
    return 0


def _point_environment_at(home: Path, args: argparse.Namespace) -> None:
    """Give Dagster and the pipeline their folders under ``home`` (before importing them)."""
    os.environ["DAGSTER_HOME"] = str(home / "dagster_home")
    (home / "dagster_home").mkdir()
    (home / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    os.environ.update(
        {
            "PIPELINE_INPUT_DIR": str(home / "incoming"),
            "PIPELINE_SCRATCH_DIR": str(home / "stage"),
            "PIPELINE_STATE_DIR": str(home / "state"),
            "PIPELINE_TMPFS_DIR": str(home / "shm"),
            "PIPELINE_ARCHIVE_DIR": str(home / "archive"),
            "PIPELINE_PARTITION_RETAIN_DAYS": f"{args.retain_days:g}",
        }
    )
    sys.path.insert(0, str(ROOT))
    warnings.simplefilter("ignore")


@dataclass
class _Bench:
    """The instance, resources and GraphQL entry point every size is measured with."""

    args: argparse.Namespace
    instance: Any
    pipeline: Any
    policy: Any
    gql: Callable[[str], dict]
    all_keys: list[str]
    now: float = float(END_EPOCH + CADENCE_S)  # the sensor's clock: just after the newest group

    def measure(self, have: int, size: int) -> dict[str, float]:
        """Grow the partitions from ``have`` to ``size`` keys and time every operation."""
        import dagster as dg

        from sensors.retirement import build_retirement_sensor

        instance, args, keys = self.instance, self.args, self.all_keys
        t0 = Stopwatch()
        for start in range(have, size, 10_000):
            instance.add_dynamic_partitions("group_id", keys[start : min(size, start + 10_000)])
        fill_registry(self.pipeline.settings().db_path, keys[have:size])
        row = {"size": size, "add_s": t0.elapsed_s}
        ready = keys[:READY_PER_TICK]
        row["has_s"] = median_s(
            lambda: [instance.has_dynamic_partition("group_id", k) for k in ready], args.repeat
        )
        row["get_s"] = median_s(lambda: instance.get_dynamic_partitions("group_id"), args.repeat)
        sensor = build_retirement_sensor(self.policy)

        def retire_tick():
            context = dg.build_sensor_context(
                instance=instance, resources={"pipeline": self.pipeline, "clock": lambda: self.now}
            )
            return sensor(context)

        row["retire_s"] = median_s(retire_tick, args.repeat)
        for name, query in (("keys", KEYS_QUERY), ("stats", STATS_QUERY)):
            row[f"{name}_s"] = median_s(lambda q=query: self.gql(q), args.repeat)
        stats = self.gql(STATS_QUERY)["assetNodeOrError"]["partitionStats"]
        assert stats["numPartitions"] == size, stats
        row["status_s"] = median_s(lambda: self.gql(STATUS_QUERY), args.repeat)
        self._time_deletions(row, retire_tick)
        _print_row(row)
        return row

    def _time_deletions(self, row: dict[str, float], retire_tick: Callable[[], Any]) -> None:
        """Apply one retirement tick's deletions as the daemon does, then restore them."""
        instance = self.instance
        (request,) = retire_tick().dynamic_partitions_requests or [None]
        doomed = list(request.partition_keys)[: self.args.delete_sample] if request else []
        t0 = Stopwatch()
        for key in doomed:
            if instance.has_dynamic_partition("group_id", key):
                instance.delete_dynamic_partition("group_id", key)
        row["delete_per_1k_s"] = (t0.elapsed_s) / len(doomed) * 1000 if doomed else float("nan")
        row["retired"] = len(request.partition_keys) if request else 0
        if doomed:
            instance.add_dynamic_partitions("group_id", doomed)


def _print_row(row: dict[str, float]) -> None:
    print(
        f"{row['size']:>7} partitions (added in {row['add_s']:.1f} s): "
        f"has x{READY_PER_TICK} {row['has_s'] * 1e3:.1f} ms, "
        f"get {row['get_s'] * 1e3:.1f} ms, retirement tick "
        f"{row['retire_s'] * 1e3:.0f} ms ({row['retired']:.0f} to retire), "
        f"GraphQL keys {row['keys_s'] * 1e3:.0f} ms, stats "
        f"{row['stats_s'] * 1e3:.0f} ms, statuses {row['status_s'] * 1e3:.0f} ms; "
        f"delete {row['delete_per_1k_s']:.2f} s per 1k",
        flush=True,
    )


def _print_ratios(rows: list[dict[str, float]], bound: int) -> None:
    base = next(r for r in rows if r["size"] == bound)
    print(f"\nratio to the design bound ({bound} partitions):")
    print(f"{'size':>8} {'has':>7} {'get':>7} {'retire':>7} {'keys':>7} {'stats':>7} {'status':>7}")
    for r in rows:
        cols = ("has_s", "get_s", "retire_s", "keys_s", "stats_s", "status_s")
        print(f"{r['size']:>8} " + " ".join(f"{r[c] / base[c]:>6.1f}x" for c in cols))


if __name__ == "__main__":
    raise SystemExit(main())
