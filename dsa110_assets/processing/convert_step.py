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
must still have the size recorded in ``subband_files.size_bytes`` at registration.
"""

from __future__ import annotations

import time
from pathlib import Path

from dsa110_assets.conversion import ConversionResult, convert_group
from dsa110_assets.ingest.groups import SubbandGroup
from dsa110_assets.registry import QueueState, Registry, get_status
from dsa110_assets.registry.queue import Owner, claim, finish
from dsa110_assets.settings import Settings
from dsa110_assets.storage import product_path

STAGE = "convert"


def ms_path_for(settings: Settings, group_id: str) -> Path:
    return product_path(settings, "ms", group_id, ".ms")


def registered_inputs(registry: Registry, group_id: str) -> tuple[dict[int, Path], dict[int, int]]:
    """The group's registered paths and the sizes recorded when they were registered.

    Sizes are those of ``subband_files.size_bytes`` (None for rows registered before that
    column existed: such files are checked for being regular files only).
    """
    paths: dict[int, Path] = {}
    sizes: dict[int, int] = {}
    for row in registry.execute(
        "SELECT subband_idx, path, size_bytes FROM subband_files WHERE group_id = ?",
        (group_id,),
    ):
        paths[int(row[0])] = Path(row[1])
        if row[2] is not None:
            sizes[int(row[0])] = int(row[2])
    return paths, sizes


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
    try:
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
        with registry.transaction():
            registry.execute(
                "INSERT INTO ms_index(path, group_id, start_mjd, end_mjd, mid_mjd, status, stage,"
                " cal_applied, field_name, pointing_ra_deg, pointing_dec_deg, created_at)"
                " VALUES (?, ?, ?, ?, ?, 'converted', ?, 0, ?, ?, ?, ?)"
                " ON CONFLICT(path) DO UPDATE SET start_mjd = excluded.start_mjd,"
                " end_mjd = excluded.end_mjd, mid_mjd = excluded.mid_mjd,"
                " status = excluded.status, stage = excluded.stage, cal_applied = 0,"
                " field_name = excluded.field_name,"
                " pointing_ra_deg = excluded.pointing_ra_deg,"
                " pointing_dec_deg = excluded.pointing_dec_deg, created_at = excluded.created_at",
                (
                    str(result.ms_path),
                    group.group_id,
                    result.start_mjd,
                    result.end_mjd,
                    result.mid_mjd,
                    STAGE,
                    result.field_name,
                    result.pointing_ra_deg,
                    result.pointing_dec_deg,
                    time.time(),
                ),
            )
    except BaseException as exc:
        finish(
            registry,
            group.group_id,
            owner,
            QueueState.FAILED,
            stage=STAGE,
            error=type(exc).__name__,
            error_message=str(exc) or repr(exc),
        )
        raise
    finish(
        registry,
        group.group_id,
        owner,
        QueueState.COMPLETED,
        stage=STAGE,
        detail=f"{result.ms_path.name} ({result.tier})",
    )
    return result
