"""The one ``Definitions`` object: assets, the sensor, resources and the IO manager."""

from __future__ import annotations

import dagster as dg

from dsa110_assets import offline  # noqa: F401  (astropy never downloads)
from dsa110_assets.defs.conversion.assets import measurement_set
from dsa110_assets.defs.ingest.assets import subband_group
from resources.io_managers import TierIOManager
from resources.pipeline import PipelineResource
from sensors.incoming import build_incoming_sensor

#: Everything that runs per observation, in one run per group_id partition.
PER_GROUP_GROUPS = ("ingest", "conversion")

process_group_job = dg.define_asset_job(
    "process_group",
    selection=dg.AssetSelection.groups(*PER_GROUP_GROUPS),
    description="Everything for one observation: subband set and its products.",
)


def build_definitions(pipeline: PipelineResource | None = None) -> dg.Definitions:
    """Definitions wired to ``pipeline`` (default: the PIPELINE_* environment)."""
    pipeline = pipeline or PipelineResource()
    return dg.Definitions(
        assets=[subband_group, measurement_set],
        jobs=[process_group_job],
        sensors=[build_incoming_sensor(process_group_job)],
        resources={
            "pipeline": pipeline,
            "tier_io_manager": TierIOManager(pipeline=pipeline),
        },
    )


defs = build_definitions()
