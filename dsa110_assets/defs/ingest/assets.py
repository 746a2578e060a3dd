"""Ingest assets: the complete, normalized subband set of each observation."""

import dagster as dg

from dsa110_assets.defs.asset_shapes import group_asset
from dsa110_assets.defs.failures import reported_failures
from dsa110_assets.ingest.groups import SubbandGroup, describe_group
from resources.pipeline import PipelineResource


@group_asset(
    group_name="ingest",
    kinds={"hdf5", "sqlite"},
    metadata={"dsa110/kind": "raw"},
    description="The 16 UVH5 subband files of one ~5-minute observation, renamed to the "
    "canonical group_id on the HDD input tier: paths, sizes, subbands present and missing.",
)
def subband_group(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> SubbandGroup:
    """Describe the group's subband files on the input tier; fail when it has none."""
    with reported_failures(), pipeline.registry() as registry:
        group = describe_group(registry, context.partition_key)
    if not group.files:
        raise dg.Failure(
            f"group {group.group_id} has no subband files on disk",
            metadata={"group_id": group.group_id},
        )
    context.add_output_metadata(
        {
            **group.metadata(),
            "total_size": dg.MetadataValue.int(group.total_bytes),
        }
    )
    return group
