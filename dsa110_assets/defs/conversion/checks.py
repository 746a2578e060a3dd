"""Asset checks on Measurement Sets: the shape a 16-subband group must have."""

import dagster as dg
import numpy as np
from casacore import tables as pt

from dsa110_assets.defs.conversion.assets import measurement_set
from dsa110_assets.defs.partitions import group_id_partitions
from dsa110_assets.instrument import N_SUBBANDS
from dsa110_assets.storage.products import ms_path_for
from resources.pipeline import PipelineResource


def ms_shape_problems(ms_path) -> tuple[list[str], dict[str, int]]:
    """Return what is wrong with the MS's windows and rows (empty when nothing), and counts.

    Rows must be windows x integrations x baselines (every baseline in every integration of
    every window, as the converter writes them); windows must be 16 and ascend in frequency.
    """
    problems: list[str] = []
    with pt.table(f"{ms_path}/SPECTRAL_WINDOW", ack=False) as spw:
        n_spw = spw.nrows()
        ref = spw.getcol("REF_FREQUENCY")
    with pt.table(f"{ms_path}/FIELD", ack=False) as fld:
        n_fields = fld.nrows()
    with pt.table(str(ms_path), ack=False) as t:
        n_rows = t.nrows()
        per_spw = n_rows // max(n_spw, 1)
        a1 = t.getcol("ANTENNA1", 0, per_spw)
        a2 = t.getcol("ANTENNA2", 0, per_spw)
    n_baselines = len(set(zip(a1.tolist(), a2.tolist(), strict=True)))
    counts = {
        "rows": n_rows,
        "spectral_windows": n_spw,
        "integrations": n_fields,
        "baselines": n_baselines,
    }
    if n_spw != N_SUBBANDS:
        problems.append(f"{n_spw} spectral windows, expected {N_SUBBANDS}")
    if n_spw > 1 and not np.all(np.diff(ref) > 0):
        problems.append("spectral windows do not ascend in frequency")
    expected = n_spw * n_fields * n_baselines
    if n_rows != expected:
        problems.append(
            f"{n_rows} rows, expected {expected} ({n_spw} windows x {n_fields} integrations x "
            f"{n_baselines} baselines)"
        )
    return problems, counts


@dg.asset_check(
    asset=measurement_set,
    partitions_def=group_id_partitions,
    blocking=True,  # a malformed product must not reach its downstream assets
    description="16 spectral windows ascending in frequency, and one row per window, "
    "integration and baseline.",
)
def ms_rows_and_windows(
    context: dg.AssetCheckExecutionContext, pipeline: PipelineResource
) -> dg.AssetCheckResult:
    """Check the MS has 16 ascending windows and one row per window, integration and baseline."""
    ms = ms_path_for(pipeline.settings(), context.partition_key)
    problems, counts = ms_shape_problems(ms)
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={**counts, "problems": "; ".join(problems) or "none"},
    )
