"""Convert one group to a Measurement Set and keep the registry truthful about it.

``pending -> in_progress -> completed`` with an ``ms_index`` row, or ``failed`` with the error
type and message; a retry moves ``failed -> in_progress`` and counts. A group already
``completed`` whose Measurement Set is in place is left exactly as it is.

Each attempt is owned (:func:`dsa110_assets.registry.queue.claim`): the owner (host, pid and
its start time, a per-attempt token, the Dagster run id) is recorded when the group enters
``in_progress``, so an attempt that died without a word (SIGKILL, OOM, a C++ ``abort()``) is
recognised by the next one, which records the death as a failed attempt, removes the dead
attempt's staging (tagged with its token, on every staging tier) and converts from there. A
group held by a live owner is refused, never converted twice at once.

Inputs are the files that were registered: each path is opened without following symlinks and
must still have the size recorded in ``subband_files.size_bytes`` at registration. A new
Measurement Set drops the flag versions of the one it replaces (they describe its rows).
"""

from __future__ import annotations

from pathlib import Path

from dsa110_assets.conversion import ConversionResult, convert_group
from dsa110_assets.ingest.groups import SubbandGroup
from dsa110_assets.registry import QueueState, Registry, get_status
from dsa110_assets.registry.products import register_ms
from dsa110_assets.registry.queue import Owner, claim
from dsa110_assets.registry.stage_run import attempt_run
from dsa110_assets.registry.subbands import registered_inputs
from dsa110_assets.safe_fs import remove_path
from dsa110_assets.settings import Settings
from dsa110_assets.storage.products import ms_path_for

STAGE = "convert"


def convert_and_register(
    settings: Settings,
    registry: Registry,
    group: SubbandGroup,
    *,
    run_id: str | None = None,
) -> ConversionResult | None:
    """Run the conversion for ``group``; return None when it was already done.

    ``run_id`` (the Dagster run) is recorded with the attempt's owner, for the operator.

    Raises
    ------
    GroupBusy
        Another live attempt holds the group (nothing is changed).
    RetriesExhausted
        The group has no retry left (a dead attempt found here is recorded first).
    Exception
        Whatever the conversion raised, after recording it as ``failed``.
    """
    ms_path = ms_path_for(settings, group.group_id)
    status = get_status(registry, group.group_id)
    if status.state is QueueState.COMPLETED and ms_path.exists():
        return None
    owner = Owner.current(run_id)
    claimed = claim(registry, group.group_id, owner, stage=STAGE)
    dead_tokens = [claimed.dead.token] if claimed.dead is not None else []
    doing = f"converting to {ms_path.name}"
    with attempt_run(registry, group.group_id, STAGE, owner, doing) as run:
        paths, sizes = registered_inputs(registry, group.group_id)
        files = {sb: path for sb, path in group.files.items() if paths.get(sb) == Path(path)}
        result = convert_group(
            files,
            ms_path,
            tmpfs_dir=settings.tmpfs_dir,
            scratch_dir=settings.staging_dir,
            expected_subbands=group.expected_subbands,
            overwrite=True,  # a retry replaces what an earlier attempt left, atomically
            registered_sizes=sizes,
            attempt_token=owner.token,
            dead_tokens=dead_tokens,
        )
        # Flag versions of a Measurement Set this one replaced describe other rows.
        remove_path(result.ms_path.with_name(result.ms_path.name + ".flagversions"))
        register_ms(
            registry,
            {
                "path": str(result.ms_path),
                "group_id": group.group_id,
                "start_mjd": result.start_mjd,
                "end_mjd": result.end_mjd,
                "mid_mjd": result.mid_mjd,
                "stage": STAGE,
                "field_name": result.field_name,
                "pointing_ra_deg": result.pointing_ra_deg,
                "pointing_dec_deg": result.pointing_dec_deg,
            },
        )
        run.done(f"{result.ms_path.name} ({result.tier})")
    return result
