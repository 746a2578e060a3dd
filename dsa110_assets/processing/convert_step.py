"""Convert one group to a Measurement Set and keep the registry truthful about it.

``pending -> in_progress -> completed`` with an ``ms_index`` row, or ``failed`` with the error
type and message; a retry moves ``failed -> in_progress`` and counts. A group already
``completed`` whose Measurement Set is in place is left exactly as it is.
"""

from __future__ import annotations

import time
from pathlib import Path

from dsa110_assets.conversion import ConversionResult, convert_group
from dsa110_assets.ingest.groups import SubbandGroup
from dsa110_assets.registry import QueueState, Registry, get_status, transition
from dsa110_assets.settings import Settings
from dsa110_assets.storage import product_path

STAGE = "convert"


def ms_path_for(settings: Settings, group_id: str) -> Path:
    return product_path(settings, "ms", group_id, ".ms")


def convert_and_register(
    settings: Settings, registry: Registry, group: SubbandGroup
) -> ConversionResult | None:
    """Run the conversion for ``group``; return None when it was already done.

    Raises whatever the conversion raised, after recording it as ``failed``.
    """
    ms_path = ms_path_for(settings, group.group_id)
    status = get_status(registry, group.group_id)
    if status.state is QueueState.COMPLETED and ms_path.exists():
        return None
    transition(registry, group.group_id, QueueState.IN_PROGRESS, stage=STAGE)
    try:
        result = convert_group(
            group.files,
            ms_path,
            tmpfs_dir=settings.tmpfs_dir,
            scratch_dir=settings.staging_dir,
            expected_subbands=group.expected_subbands,
            overwrite=True,  # a retry replaces what an earlier attempt left, atomically
        )
    except BaseException as exc:
        transition(
            registry,
            group.group_id,
            QueueState.FAILED,
            error=type(exc).__name__,
            error_message=str(exc) or repr(exc),
            stage=STAGE,
        )
        raise
    with registry.transaction():
        registry.execute(
            "INSERT INTO ms_index(path, group_id, start_mjd, end_mjd, mid_mjd, status, stage,"
            " cal_applied, field_name, pointing_ra_deg, pointing_dec_deg, created_at)"
            " VALUES (?, ?, ?, ?, ?, 'converted', ?, 0, ?, ?, ?, ?)"
            " ON CONFLICT(path) DO UPDATE SET start_mjd = excluded.start_mjd,"
            " end_mjd = excluded.end_mjd, mid_mjd = excluded.mid_mjd, status = excluded.status,"
            " stage = excluded.stage, cal_applied = 0, field_name = excluded.field_name,"
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
    transition(registry, group.group_id, QueueState.COMPLETED, stage=STAGE)
    return result
