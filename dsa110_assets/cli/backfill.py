"""``dsa110 backfill``: a Dagster partition backfill of the daily products over a date range.

Why a real backfill (not one ``execute_in_process`` per day): the daily assets declare their
``BackfillPolicy`` (one day per run, see :mod:`dsa110_assets.defs.asset_shapes`), and only
the daemon's backfill machinery honours it. The backfill is submitted to the instance at
``DAGSTER_HOME`` the way the UI's "Materialize..." dialog submits one (GraphQL
``launchPartitionBackfill`` for an asset selection: :meth:`PartitionBackfill
.from_asset_partitions` then :meth:`DagsterInstance.add_backfill`); the pinned Dagster has no
public Python API for it. The daemon (``dagster-daemon run``) then launches its runs, and the
UI lists it under Overview -> Backfills.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

from dsa110_assets.cli.arguments import add_command, add_number, iso_date_arg
from dsa110_assets.cli.common import CommandError, load_definitions
from dsa110_assets.settings import NumberRule
from dsa110_assets.timing import Stopwatch

#: The job whose assets a backfill re-makes.
DAILY_JOB = "daily_products"
#: Tag on every backfill this command submits (and so on its runs).
BACKFILL_TAG = "dsa110/backfill"
#: How long ``--wait`` waits by default: a bound for a stuck daemon, not an expectation.
WAIT_TIMEOUT_S = 86_400.0
WAIT_RULE = NumberRule(float, 0.0, 30 * 86_400.0, low_open=True)
#: How often ``--wait`` reads the backfill's status.
POLL_S = 5.0
POLL_RULE = NumberRule(float, 0.0, 3_600.0, low_open=True)


def add_backfill_parser(sub: Any) -> None:
    """Add ``backfill`` and its options to ``sub``."""
    backfill = add_command(
        sub,
        "backfill",
        cmd_backfill,
        help="re-make the daily products (mosaic, photometry, light curves) for a date range",
        description="Submits a Dagster backfill of the daily_products assets over the UTC "
        "dates --start to --end (inclusive) to the instance at DAGSTER_HOME; the daemon runs "
        "it with the assets' backfill policy (one run per day) and the UI shows it under "
        "Overview -> Backfills. Re-running a day replaces its products and registry rows.",
    )
    backfill.add_argument(
        "--start", required=True, type=iso_date_arg, help="first date, YYYY-MM-DD"
    )
    backfill.add_argument(
        "--end", required=True, type=iso_date_arg, help="last date, YYYY-MM-DD (inclusive)"
    )
    backfill.add_argument(
        "--wait",
        action="store_true",
        help="wait until the backfill has finished; exit 1 unless every run succeeded",
    )
    add_number(
        backfill,
        "--timeout",
        WAIT_RULE,
        f"with --wait, give up after S seconds (default {WAIT_TIMEOUT_S:g})",
        default=WAIT_TIMEOUT_S,
        metavar="S",
    )
    add_number(
        backfill,
        "--poll",
        POLL_RULE,
        f"with --wait, read the status every S seconds (default {POLL_S:g})",
        default=POLL_S,
        metavar="S",
    )


def date_range(first: date, last: date) -> list[str]:
    """Return every date from ``first`` to ``last`` (inclusive) as ``YYYY-MM-DD``.

    Raises
    ------
    CommandError
        When ``last`` is before ``first``.
    """
    if last < first:
        raise CommandError(f"--end {last} is before --start {first}")
    return [(first + timedelta(days=k)).isoformat() for k in range((last - first).days + 1)]


def cmd_backfill(args: argparse.Namespace) -> int:
    """Submit the backfill, print its id, dates and UI path; with ``--wait``, wait for it.

    Returns
    -------
    int
        0 when submitted (with ``--wait``: when every run succeeded).

    Raises
    ------
    CommandError
        When the dates are out of order or outside the daily partitions, ``DAGSTER_HOME`` is
        not set, or (with ``--wait``) the backfill did not succeed in time.
    """
    days = date_range(args.start, args.end)
    if not os.environ.get("DAGSTER_HOME"):
        raise CommandError(
            "DAGSTER_HOME is not set: a backfill needs a persistent Dagster instance and its "
            "daemon (dagster-daemon run) to run it"
        )
    import dagster as dg

    defs = load_definitions().defs
    with dg.DagsterInstance.get() as instance:
        backfill_id = submit_daily_backfill(instance, defs, days)
        print(f"backfill {backfill_id}: {DAILY_JOB} for {days[0]} .. {days[-1]} ({len(days)} days)")
        print(f"UI: /runs/b/{backfill_id} (Overview -> Backfills); the daemon runs it")
        if args.wait:
            wait_for_backfill(instance, backfill_id, timeout_s=args.timeout, poll_s=args.poll)
    return 0


def submit_daily_backfill(instance: Any, defs: Any, days: Sequence[str]) -> str:
    """Add a backfill of the daily job's assets over ``days`` to ``instance``; return its id.

    Parameters
    ----------
    instance
        A persistent :class:`dagster.DagsterInstance` whose daemon will run the backfill.
    defs
        The :class:`dagster.Definitions` holding the ``daily_products`` job.
    days
        Partition keys, ``YYYY-MM-DD``.

    Raises
    ------
    CommandError
        When a day is not a partition of the daily assets (before ``PIPELINE_DAILY_START``,
        or today and later: a day is a partition once it has ended).
    """
    from dagster._core.execution.backfill import PartitionBackfill
    from dagster._core.utils import make_new_backfill_id
    from dagster._time import get_current_timestamp

    job = defs.resolve_job_def(DAILY_JOB)
    outside = [day for day in days if not job.partitions_def.has_partition_key(day)]
    if outside:
        raise CommandError(
            f"{', '.join(outside)}: not a partition of {DAILY_JOB} (from "
            f"PIPELINE_DAILY_START to yesterday, UTC)"
        )
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=make_new_backfill_id(),
        asset_graph=defs.resolve_asset_graph(),
        partition_names=list(days),
        asset_selection=sorted(job.asset_layer.executable_asset_keys),
        backfill_timestamp=get_current_timestamp(),
        tags={BACKFILL_TAG: "cli"},
        dynamic_partitions_store=instance,
        all_partitions=False,
        title=None,
        description=f"dsa110 backfill --start {days[0]} --end {days[-1]}",
        run_config=None,
    )
    instance.add_backfill(backfill)
    return backfill.backfill_id


def wait_for_backfill(instance: Any, backfill_id: str, *, timeout_s: float, poll_s: float) -> None:
    """Poll the backfill's status until it is terminal; print each change and the runs.

    Raises
    ------
    CommandError
        When it ended other than ``COMPLETED_SUCCESS``, or is still going after ``timeout_s``.
    """
    from dagster._core.execution.backfill import BULK_ACTION_TERMINAL_STATUSES, BulkActionStatus

    watch, shown = Stopwatch(), None
    while True:
        status = instance.get_backfill(backfill_id).status
        if status != shown:
            print(
                f"backfill {backfill_id}: {status.value} after {watch.elapsed_s:.0f} s", flush=True
            )
            shown = status
        if status in BULK_ACTION_TERMINAL_STATUSES:
            break
        if watch.elapsed_s > timeout_s:
            raise CommandError(
                f"backfill {backfill_id} is still {status.value} after {timeout_s:g} s "
                "(is dagster-daemon running against this DAGSTER_HOME?)"
            )
        time.sleep(poll_s)
    failed = _print_runs(instance, backfill_id)
    if status is not BulkActionStatus.COMPLETED_SUCCESS or failed:
        raise CommandError(
            f"backfill {backfill_id} ended {status.value}"
            + (f"; failed: {', '.join(failed)}" if failed else "")
        )


def _print_runs(instance: Any, backfill_id: str) -> list[str]:
    """Print each run of the backfill (partition, status, id); return the failed partitions."""
    import dagster as dg

    failed = []
    for run in reversed(instance.get_runs(filters=dg.RunsFilter.for_backfill(backfill_id))):
        partition = run_partitions(run.tags)
        print(f"  {partition}: {run.status.value} (run {run.run_id})")
        if run.status is not dg.DagsterRunStatus.SUCCESS:
            failed.append(partition)
    return failed


def run_partitions(tags: dict[str, str]) -> str:
    """Return the partition(s) a run made, from its tags.

    A backfill's runs carry a partition range (``dagster/asset_partition_range_start`` and
    ``_end``; one day each under the daily policy) rather than ``dagster/partition``.
    """
    if "dagster/partition" in tags:
        return tags["dagster/partition"]
    start = tags.get("dagster/asset_partition_range_start", "?")
    end = tags.get("dagster/asset_partition_range_end", "?")
    return start if start == end else f"{start}...{end}"
