"""The one ``Definitions`` object: assets, jobs, sensors, schedules, resources, IO manager."""

from __future__ import annotations

import dagster as dg

from dsa110_assets import offline  # noqa: F401  (astropy never downloads)
from dsa110_assets.defs.calibration.assets import calibrated_ms, calibration_tables
from dsa110_assets.defs.conversion.assets import measurement_set
from dsa110_assets.defs.conversion.checks import ms_rows_and_windows
from dsa110_assets.defs.daily.assets import daily_mosaic, light_curves, mosaic_photometry
from dsa110_assets.defs.flagging.assets import flagged_ms
from dsa110_assets.defs.flagging.checks import flagged_fraction_acceptable
from dsa110_assets.defs.imaging.assets import image, thumbnail
from dsa110_assets.defs.imaging.checks import (
    calibrator_recovered,
    image_is_finite_and_nonzero,
    noise_near_radiometer,
)
from dsa110_assets.defs.ingest.assets import subband_group
from dsa110_assets.defs.photometry.assets import group_photometry
from dsa110_assets.defs.storage.assets import storage_usage
from dsa110_assets.defs.storage.jobs import (
    storage_lifecycle,
    storage_lifecycle_schedule,
    storage_usage_job,
    storage_usage_schedule,
)
from resources.clock import Clock, system_clock
from resources.flagging import FlaggingResource
from resources.io_managers import TierIOManager
from resources.pipeline import PipelineResource
from resources.selfcal import SelfcalResource
from resources.wsclean import WSCleanResource
from sensors.calibration import build_calibration_sensor
from sensors.daily import build_daily_sensor
from sensors.incoming import TICK_INTERVAL_S, build_incoming_sensor
from sensors.retirement import build_retirement_sensor

#: The assets of one observation (group_id partitions), upstream first.
PER_GROUP_ASSETS = (
    subband_group,
    measurement_set,
    flagged_ms,
    calibration_tables,
    calibrated_ms,
    image,
    thumbnail,
    group_photometry,
)
#: The assets of one UTC day (daily partitions), upstream first.
DAILY_ASSETS = (daily_mosaic, mosaic_photometry, light_curves)

#: The assets of the storage tiers themselves (not partitioned).
STORAGE_ASSETS = (storage_usage,)

#: Everything that runs per observation, in one run per group_id partition.
PER_GROUP_GROUPS = ("ingest", "conversion", "flagging", "calibration", "imaging", "photometry")

#: How the steps of a per-group run execute: all in the run worker's own process. A step
#: process of the multiprocess executor costs 11-16 s to start (it imports the code
#: location), ~100 s a group over its steps, for steps that mostly wait on WSClean or the
#: disk. Pools (``wsclean``) and blocking checks hold in process as well; a run worker that
#: dies (OOM, a crash in C++) is retried from its failed step by the instance
#: (``run_retries``), and a killed conversion cannot outlive its run.
GROUP_EXECUTOR = dg.in_process_executor


def build_process_group_job(
    executor: dg.ExecutorDefinition = GROUP_EXECUTOR,
) -> dg.UnresolvedAssetJobDefinition:
    """Return the per-group job: every asset of one observation, one run per ``group_id``.

    Parameters
    ----------
    executor
        How its steps run; the default is :data:`GROUP_EXECUTOR` (in process). The
        benchmarks pass ``dagster.multiprocess_executor`` to measure the per-step cost.
    """
    in_process = executor is dg.in_process_executor
    return dg.define_asset_job(
        "process_group",
        selection=dg.AssetSelection.groups(*PER_GROUP_GROUPS),
        executor_def=executor,
        description="Everything for one observation: subband set and its products"
        + (", every step in the run's own process." if in_process else "."),
    )


daily_products_job = dg.define_asset_job(
    "daily_products",
    selection=dg.AssetSelection.groups("daily"),
    description="A UTC day's mosaic, its photometry and the light-curve metrics.",
)


def build_definitions(
    pipeline: PipelineResource | None = None,
    wsclean: WSCleanResource | None = None,
    clock: Clock = system_clock,
    flagging: FlaggingResource | None = None,
    selfcal: SelfcalResource | None = None,
    group_executor: dg.ExecutorDefinition = GROUP_EXECUTOR,
    incoming_interval_s: int = TICK_INTERVAL_S,
) -> dg.Definitions:
    """Build the Definitions wired to the given resources.

    Parameters
    ----------
    pipeline
        Settings and registry access; default: the ``PIPELINE_*`` environment.
    wsclean
        How WSClean runs; default: :class:`~resources.wsclean.WSCleanResource`'s defaults.
    clock
        The wall clock the time-dependent sensors read; tests pass a scripted one.
    flagging
        How groups are flagged; default: :class:`~resources.flagging.FlaggingResource`'s.
    selfcal
        How calibrated groups self-calibrate; default:
        :class:`~resources.selfcal.SelfcalResource`'s.
    group_executor
        How the per-group job's steps run (see :func:`build_process_group_job`).
    incoming_interval_s
        Seconds between ``incoming_sensor`` ticks (:data:`sensors.incoming.TICK_INTERVAL_S`).
    """
    pipeline = pipeline or PipelineResource()
    process_group_job = build_process_group_job(group_executor)
    return dg.Definitions(
        assets=[*PER_GROUP_ASSETS, *DAILY_ASSETS, *STORAGE_ASSETS],
        asset_checks=[
            ms_rows_and_windows,
            flagged_fraction_acceptable,
            image_is_finite_and_nonzero,
            noise_near_radiometer,
            calibrator_recovered,
        ],
        jobs=[process_group_job, daily_products_job, storage_lifecycle, storage_usage_job],
        schedules=[storage_lifecycle_schedule, storage_usage_schedule],
        sensors=[
            build_incoming_sensor(process_group_job, incoming_interval_s),
            build_daily_sensor(daily_products_job),
            build_calibration_sensor(process_group_job),
            build_retirement_sensor(),
        ],
        resources={
            "pipeline": pipeline,
            "tier_io_manager": TierIOManager(pipeline=pipeline),
            "wsclean": wsclean or WSCleanResource(),
            "flagging": flagging or FlaggingResource(),
            "selfcal": selfcal or SelfcalResource(),
            "clock": dg.ResourceDefinition.hardcoded_resource(clock, "the wall clock"),
        },
    )


defs = build_definitions()
