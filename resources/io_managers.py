"""The tier-placing IO manager: the placement rule enforced for every asset.

Assets declare what they produce with ``metadata={"dsa110/kind": KIND}`` (and
``"dsa110/suffix"`` for file products). Large products are written by the science code
straight to their final home (atomically), so the asset returns the path and this IO manager
checks it is exactly where the rule says (``{tier_root}/{kind}/{partition}{suffix}`` on the
kind's tier), records path, size and tier as metadata, and hands the path to downstream assets.
Raw subband groups stay on the HDD input tier and are read back from the registry.
"""

import os
from pathlib import Path
from typing import Any

import dagster as dg

from dsa110_assets.ingest.groups import SubbandGroup, describe_group
from dsa110_assets.storage import WrongTierError, check_placement, product_path
from resources.pipeline import PipelineResource


def _tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        total += sum(os.lstat(os.path.join(dirpath, f)).st_size for f in files)
    return total


def _kind_and_suffix(metadata: dict[str, Any] | None, where: str) -> tuple[str, str]:
    metadata = metadata or {}
    kind = metadata.get("dsa110/kind")
    if not kind:
        raise WrongTierError(f"{where} declares no 'dsa110/kind' metadata; cannot place it")
    return str(kind), str(metadata.get("dsa110/suffix", ""))


class TierIOManager(dg.ConfigurableIOManager):
    """Checks placement on output and returns product paths on input."""

    pipeline: dg.ResourceDependency[PipelineResource]

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        settings = self.pipeline.settings()
        kind, suffix = _kind_and_suffix(context.definition_metadata, str(context.asset_key))
        if isinstance(obj, SubbandGroup):
            for path in obj.files.values():
                check_placement(settings, kind, path)
            return
        if not isinstance(obj, Path):
            raise TypeError(
                f"{context.asset_key.to_user_string()} returned {type(obj).__name__}; "
                "file products must return their pathlib.Path"
            )
        tier = check_placement(settings, kind, obj)
        expected = product_path(settings, kind, context.partition_key, suffix)
        if obj.resolve() != expected.resolve():
            raise WrongTierError(
                f"{kind} for {context.partition_key} must be at {expected}, not {obj}"
            )
        if not obj.exists():
            raise FileNotFoundError(f"{kind} product {obj} was not written")
        context.add_output_metadata(
            {
                "path": dg.MetadataValue.path(str(obj)),
                "size_bytes": dg.MetadataValue.int(_tree_bytes(obj)),
                "tier": tier.value,
            }
        )

    def load_input(self, context: dg.InputContext) -> Any:
        settings = self.pipeline.settings()
        upstream = context.upstream_output
        if upstream is None:  # pragma: no cover - assets always have one
            raise ValueError("TierIOManager loads only asset inputs")
        kind, suffix = _kind_and_suffix(upstream.definition_metadata, str(upstream.asset_key))
        partition = context.partition_key
        if kind == "raw":
            with self.pipeline.registry() as registry:
                return describe_group(registry, partition)
        path = product_path(settings, kind, partition, suffix)
        if not path.exists():
            raise FileNotFoundError(
                f"{upstream.asset_key.to_user_string()} for {partition} is missing at {path}; "
                "materialize it first"
            )
        return path
