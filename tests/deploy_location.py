"""The code location that tests/test_deployment.py serves to real Dagster daemons.

The production assets, sensor, resources and IO manager, but a ``process_group`` job that
stops at the Measurement Set (ingest and conversion): twelve full groups through calibration
and WSClean would take far longer than the test budget on two cores, and what the deployment
tests check (queue order, concurrency limits, memory, crash recovery) is decided by the
instance config and the conversion's claim, not by imaging. The job runs in process: its run
worker is the process that claims the group, so killing it kills the conversion (with the
multiprocess executor a killed run worker would leave its step process converting).
Everything is read from the ``PIPELINE_*`` environment the test gives the daemon.
"""

from __future__ import annotations

import dagster as dg

from dsa110_assets import offline  # noqa: F401  (astropy never downloads)
from dsa110_assets.defs.conversion.assets import measurement_set
from dsa110_assets.defs.ingest.assets import subband_group
from resources.io_managers import TierIOManager
from resources.pipeline import PipelineResource
from sensors.incoming import build_incoming_sensor

pipeline = PipelineResource()

process_group_job = dg.define_asset_job(
    "process_group",
    selection=dg.AssetSelection.groups("ingest", "conversion"),
    executor_def=dg.in_process_executor,
    description="One observation's subband set and Measurement Set (deployment tests).",
)

defs = dg.Definitions(
    assets=[subband_group, measurement_set],
    jobs=[process_group_job],
    sensors=[build_incoming_sensor(process_group_job)],
    resources={"pipeline": pipeline, "tier_io_manager": TierIOManager(pipeline=pipeline)},
)
