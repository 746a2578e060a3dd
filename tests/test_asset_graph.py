"""The asset graph, compared to a checked-in snapshot so a change to it shows up in review.

``tests/snapshots/asset_graph.json`` lists every asset (group, kinds, partitions, deps), every
asset check (its asset and whether it blocks), the jobs, sensors and schedules of
``dsa110_assets.definitions.defs``. A change of the graph fails here with the difference; if
the change is meant, regenerate the file with ``DSA110_UPDATE_SNAPSHOT=1 pytest
tests/test_asset_graph.py`` and commit it, so the reviewer sees the graph's diff.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path

import dagster as dg

from dsa110_assets.defs.partitions import DAILY_START_DEFAULT

SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_graph.json"
UPDATE_VARIABLE = "DSA110_UPDATE_SNAPSHOT"


def _partitions(partitions_def: dg.PartitionsDefinition | None) -> dict[str, str] | None:
    if partitions_def is None:
        return None
    out = {"type": type(partitions_def).__name__}
    if isinstance(partitions_def, dg.DynamicPartitionsDefinition):
        out["name"] = str(partitions_def.name)
    if isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        out["start"] = partitions_def.start.date().isoformat()
        out["timezone"] = str(partitions_def.timezone)
    return out


def graph_snapshot(defs: dg.Definitions) -> dict[str, object]:
    """Return the reviewable shape of ``defs``: assets, checks, jobs, sensors, schedules."""
    graph = defs.resolve_asset_graph()
    assets = {
        node.key.to_user_string(): {
            "group": node.group_name,
            "kinds": sorted(node.kinds),
            "partitions": _partitions(node.partitions_def),
            "deps": sorted(key.to_user_string() for key in node.parent_keys),
        }
        for node in sorted(graph.asset_nodes, key=lambda n: n.key.to_user_string())
    }
    checks = {
        f"{key.asset_key.to_user_string()}:{key.name}": {
            "asset": key.asset_key.to_user_string(),
            "blocking": graph.get_check_spec(key).blocking,
        }
        for key in sorted(graph.asset_check_keys, key=lambda k: (k.asset_key.path, k.name))
    }
    return {
        "assets": assets,
        "asset_checks": checks,
        "jobs": {  # name -> executor (the per-group job runs its steps in process)
            job.name: getattr(job.executor_def, "name", None) or "default"
            for job in sorted(defs.jobs or [], key=lambda j: j.name)
        },
        "sensors": sorted(sensor.name for sensor in defs.sensors or []),
        "schedules": sorted(schedule.name for schedule in defs.schedules or []),
    }


def test_the_asset_graph_matches_its_snapshot() -> None:
    from dsa110_assets.definitions import defs

    current = json.dumps(graph_snapshot(defs), indent=2, sort_keys=True) + "\n"
    if os.environ.get(UPDATE_VARIABLE) == "1":
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        SNAPSHOT.write_text(current)
    assert SNAPSHOT.is_file(), f"no snapshot yet: run with {UPDATE_VARIABLE}=1 to write it"
    expected = SNAPSHOT.read_text()
    diff = "".join(
        difflib.unified_diff(
            expected.splitlines(keepends=True),
            current.splitlines(keepends=True),
            fromfile=str(SNAPSHOT),
            tofile="dsa110_assets.definitions.defs",
        )
    )
    assert not diff, (
        "the asset graph changed (daily partitions assume PIPELINE_DAILY_START unset, i.e. "
        f"{DAILY_START_DEFAULT}). If the change is meant, rerun with {UPDATE_VARIABLE}=1 and "
        f"commit {SNAPSHOT.name}:\n{diff}"
    )
