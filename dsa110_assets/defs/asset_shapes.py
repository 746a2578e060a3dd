"""The two shapes of the platform's assets: one partition per group, one per day.

Every asset is owned by the pipeline team and stored through the tier IO manager (which
enforces the tmpfs/SSD/HDD placement rules); a per-group asset is partitioned by
``group_id``, a daily one by date with one day per backfill run. Declaring those facts once
here keeps the asset modules to what is particular to each asset: its group, kinds, deps,
metadata and description.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from dsa110_assets.defs.partitions import daily_partitions, group_id_partitions

OWNERS = ["team:dsa110-pipeline"]
TIER_IO_MANAGER = "tier_io_manager"

#: A backfill over days launches one run per day, so one bad day fails alone.
ONE_DAY_PER_RUN = dg.BackfillPolicy.multi_run(max_partitions_per_run=1)


def group_asset(*, group_name: str, **kwargs: Any) -> Any:
    """Declare an asset with one partition per ``group_id``, placed by the tier IO manager.

    Parameters
    ----------
    group_name
        The asset group the UI shows it in (``ingest``, ``conversion``, ``calibration``, ...).
    **kwargs
        Everything else :func:`dagster.asset` takes (kinds, deps, metadata, description, ...).
    """
    return dg.asset(
        partitions_def=group_id_partitions,
        group_name=group_name,
        owners=OWNERS,
        io_manager_key=TIER_IO_MANAGER,
        **kwargs,
    )


def daily_asset(**kwargs: Any) -> Any:
    """Declare an asset of group ``daily`` with one partition per date, one day per run.

    Parameters
    ----------
    **kwargs
        Everything else :func:`dagster.asset` takes (kinds, deps, metadata, description, ...).
    """
    return dg.asset(
        partitions_def=daily_partitions,
        group_name="daily",
        owners=OWNERS,
        io_manager_key=TIER_IO_MANAGER,
        backfill_policy=ONE_DAY_PER_RUN,
        **kwargs,
    )
