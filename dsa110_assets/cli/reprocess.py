"""``dsa110 reprocess``: re-run one group by group_id, also one whose partition was retired."""

from __future__ import annotations

import argparse
import os
from typing import Any

from dsa110_assets.cli.arguments import add_command, group_id_arg
from dsa110_assets.cli.common import CommandError, existing_registry, load_definitions
from dsa110_assets.cli.display import display_name
from dsa110_assets.settings import Settings


def add_reprocess_parser(sub: Any) -> None:
    """Add ``reprocess`` and its options to ``sub``."""
    reprocess = add_command(
        sub,
        "reprocess",
        cmd_reprocess,
        help="re-run one group by group_id (also one whose partition was retired)",
        description="Re-adds GROUP_ID's group_id partition if it was retired and runs "
        "process_group for it in DAGSTER_HOME's instance (so the UI shows the run). A "
        "completed conversion is reused, later stages run again; registry rows and files of "
        "the group are never removed.",
    )
    reprocess.add_argument("group_id", type=group_id_arg, metavar="GROUP_ID")
    reprocess.add_argument(
        "--assets",
        metavar="KEYS",
        help="comma-separated asset keys of process_group to run (default: all of them)",
    )
    reprocess.add_argument(
        "--partition-only",
        action="store_true",
        help="only re-add the partition (then launch from the UI or 'dagster asset materialize')",
    )


def cmd_reprocess(args: argparse.Namespace) -> int:
    """Re-run one group by its group_id, also one whose partition was retired; return 0.

    Why: only recent groups keep a ``group_id`` partition (partition_retirement_sensor), so
    an old group is not in the UI's partition list. Its registry rows and files stay; this
    re-adds its partition (its earlier runs and materializations show again) and runs
    ``process_group`` for it in the ``DAGSTER_HOME`` instance, so the run is recorded where
    the UI shows it. A completed conversion whose MS is in place is reused; the later stages
    run again and replace their products and rows. A failed group retries only while its
    queue retries last.

    Raises
    ------
    CommandError
        When there is no registry, the group is not in it, ``--assets`` names an asset
        outside ``process_group``, or the run failed.
    """
    import dagster as dg

    group_id = args.group_id
    _print_group_record(Settings.from_env(), group_id)
    definitions = load_definitions()
    job = definitions.defs.resolve_job_def("process_group")
    selection = _asset_selection(job, args.assets)
    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else None
    if instance is None:
        print("DAGSTER_HOME is not set: an ephemeral instance; the UI will not show this run")
    with instance or dg.DagsterInstance.ephemeral() as inst:
        _ensure_partition(inst, group_id)
        if args.partition_only:
            _print_launch_hint(group_id, definitions.PER_GROUP_GROUPS)
            return 0
        result = job.execute_in_process(
            partition_key=group_id,
            instance=inst,
            asset_selection=selection,
            raise_on_error=False,
            tags={"group_id": group_id, "dsa110/reprocess": "cli"},
        )
    _report_run(group_id, result)
    return 0


def _print_group_record(settings: Settings, group_id: str) -> None:
    """Print the group's queue state, retries, files and last error."""
    from dsa110_assets.partition_retirement import group_record
    from dsa110_assets.registry import Registry

    with Registry(existing_registry(settings), readonly=True) as registry:
        record = group_record(registry, group_id)
    if record is None:
        raise CommandError(f"{group_id} is not in the registry's processing_queue")
    print(
        f"{group_id}: {record.state} (retries {record.retry_count}), "
        f"{record.subband_files} subband files"
        + (f"; last error: {display_name(record.error_message)}" if record.error_message else "")
    )


def _asset_selection(job: Any, assets: str | None) -> list[Any] | None:
    """Return the asset keys ``--assets`` names (None: all of ``process_group``)."""
    if not assets:
        return None
    known = {key.to_user_string(): key for key in job.asset_layer.executable_asset_keys}
    wanted = [name.strip() for name in assets.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in known]
    if unknown or not wanted:
        raise CommandError(
            f"--assets: {', '.join(unknown) or 'nothing given'} not in process_group "
            f"(choose from {', '.join(sorted(known))})"
        )
    return [known[name] for name in wanted]


def _ensure_partition(instance: Any, group_id: str) -> None:
    """Re-add the group's ``group_id`` partition if it was retired, saying which it was."""
    from dsa110_assets.defs.partitions import group_id_partitions

    if instance.has_dynamic_partition(group_id_partitions.name, group_id):
        print(f"partition {group_id} exists")
    else:
        instance.add_dynamic_partitions(group_id_partitions.name, [group_id])
        print(f"partition {group_id} re-added")


def _print_launch_hint(group_id: str, per_group_groups: tuple[str, ...]) -> None:
    """Print how to launch the re-added partition from the UI or Dagster's own CLI."""
    groups = " or ".join(f"group:{g}" for g in per_group_groups)
    print(
        f"launch it from the UI (job process_group, partition {group_id}) or: "
        f"dagster asset materialize -m dsa110_assets.definitions --select "
        f"'{groups}' --partition {group_id}"
    )


def _report_run(group_id: str, result: Any) -> None:
    """Print the assets the run materialized; raise naming the failed steps if it failed."""
    if not result.success:
        failed = [e.step_key for e in result.all_events if e.is_step_failure]
        raise CommandError(
            f"{group_id}: run {result.run_id} failed"
            + (f" in {', '.join(sorted(set(failed)))}" if failed else "")
        )
    materialized = sorted(
        {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    )
    print(f"{group_id}: ok (run {result.run_id}); materialized {', '.join(materialized)}")
