"""The tier-placing IO manager: the placement rule enforced for every asset.

Assets declare what they produce with ``metadata={"dsa110/kind": KIND}`` (and
``"dsa110/suffix"`` for file products). Large products are written by the science code
straight to their final home (atomically), so the asset returns the path and this IO manager
checks it is exactly where the rule says (``{tier_root}/{kind}/{partition}{suffix}`` on the
kind's tier), records path, size and tier as metadata, and hands the path to downstream assets.
Products whose names carry more than the partition (``{group_id}-{field}-image.fits``)
declare ``"dsa110/pattern"`` instead (``{partition}`` is substituted, shell wildcards allowed);
an asset producing several files (or none: calibration tables of a group without a calibrator)
returns a list of paths, each checked. Raw subband groups stay on the HDD input tier and are
read back from the registry.
"""

import fnmatch
import glob
import os
from pathlib import Path
from typing import Any

import dagster as dg

from dsa110_assets.ingest.groups import SubbandGroup, describe_group
from dsa110_assets.storage import WrongTierError, check_placement, product_path
from resources.pipeline import PipelineResource


def _tree_bytes(path: Path) -> int:
    """Return the bytes of a file, or of every file under a folder (a Measurement Set)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        total += sum(os.lstat(os.path.join(dirpath, f)).st_size for f in files)
    return total


def _kind_and_suffix(metadata: dict[str, Any] | None, where: str) -> tuple[str, str]:
    """Return the asset's declared product kind and file suffix; refuse an undeclared kind."""
    metadata = metadata or {}
    kind = metadata.get("dsa110/kind")
    if not kind:
        raise WrongTierError(f"{where} declares no 'dsa110/kind' metadata; cannot place it")
    return str(kind), str(metadata.get("dsa110/suffix", ""))


def _pattern(metadata: dict[str, Any] | None, partition: str) -> str | None:
    """Return the asset's file-name pattern for ``partition`` (escaped), if it declares one."""
    pattern = (metadata or {}).get("dsa110/pattern")
    return str(pattern).replace("{partition}", glob.escape(partition)) if pattern else None


class TierIOManager(dg.ConfigurableIOManager):
    """Checks placement on output and returns product paths on input."""

    pipeline: dg.ResourceDependency[PipelineResource]

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        """Check each returned path is where the placement rule puts it; record its metadata.

        Raises
        ------
        WrongTierError
            When a product is on the wrong tier or not at its rule's path.
        TypeError
            When the asset returned something other than a path (or a list of paths).
        FileNotFoundError
            When the asset returned the right path but wrote nothing there.
        """
        settings = self.pipeline.settings()
        kind, suffix = _kind_and_suffix(context.definition_metadata, str(context.asset_key))
        if isinstance(obj, SubbandGroup):
            for path in obj.files.values():
                check_placement(settings, kind, path)
            return
        paths = list(obj) if isinstance(obj, (list, tuple)) else [obj]
        for path in paths:
            if not isinstance(path, Path):
                raise TypeError(
                    f"{context.asset_key.to_user_string()} returned {type(path).__name__}; "
                    "file products must return their pathlib.Path (or a list of them)"
                )
        pattern = _pattern(context.definition_metadata, context.asset_partition_key)
        expected = product_path(settings, kind, context.asset_partition_key, suffix)
        tiers = set()
        for path in paths:
            tiers.add(check_placement(settings, kind, path))
            if pattern is not None:
                ok = path.parent.resolve() == expected.parent.resolve() and fnmatch.fnmatchcase(
                    path.name, pattern
                )
                want = expected.parent / pattern
            else:
                ok = path.resolve() == expected.resolve()
                want = expected
            if not ok:
                raise WrongTierError(
                    f"{kind} for {context.asset_partition_key} must be at {want}, not {path}"
                )
            if not path.exists():
                raise FileNotFoundError(f"{kind} product {path} was not written")
        metadata: dict[str, Any] = {
            "size_bytes": dg.MetadataValue.int(sum(_tree_bytes(p) for p in paths)),
            "tier": ", ".join(sorted(t.value for t in tiers)) or "none",
        }
        if isinstance(obj, Path):
            metadata["path"] = dg.MetadataValue.path(str(obj))
        else:
            metadata["paths"] = dg.MetadataValue.json([str(p) for p in paths])
        context.add_output_metadata(metadata)

    def load_input(self, context: dg.InputContext) -> Any:
        """Return the upstream product's path (a raw group: its registry description).

        Raises
        ------
        FileNotFoundError
            When the upstream product has not been materialized.
        FileExistsError
            When a pattern product matches several files, so the choice would be a guess.
        """
        settings = self.pipeline.settings()
        upstream = context.upstream_output
        if upstream is None:  # pragma: no cover - assets always have one
            raise ValueError("TierIOManager loads only asset inputs")
        kind, suffix = _kind_and_suffix(upstream.definition_metadata, str(upstream.asset_key))
        partition = context.asset_partition_key
        if kind == "raw":
            with self.pipeline.registry() as registry:
                return describe_group(registry, partition)
        path = product_path(settings, kind, partition, suffix)
        pattern = _pattern(upstream.definition_metadata, partition)
        if pattern is not None:
            found = sorted(path.parent.glob(pattern))
            if len(found) > 1:
                raise FileExistsError(
                    f"{upstream.asset_key.to_user_string()} for {partition}: several products "
                    f"match {path.parent / pattern}: {[p.name for p in found]}"
                )
            path = found[0] if found else path.parent / pattern
        if not path.exists():
            raise FileNotFoundError(
                f"{upstream.asset_key.to_user_string()} for {partition} is missing at {path}; "
                "materialize it first"
            )
        return path
