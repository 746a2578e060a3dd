"""Flag one group's Measurement Set before calibration, keeping every step's flags restorable.

The steps (:data:`dsa110_assets.flagging.find.STEPS`) are the data-quality flags, then
AOFlagger. Before each, the MS's flags are saved as a flag version (CASA's ``flagmanager``
format: ``before_flagging``, ``before_aoflagger``), and the result as ``flagged``, so an
astronomer can undo any step with CASA or ``dsa110 flags restore``. A re-run starts from
``before_flagging`` (the converter's flags), so flagging twice gives the same flags as once,
and what the registry says was flagged is what the MS holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dsa110_assets.flagging.find import STEPS, FlagFindings, find_flags, write_step_flags
from dsa110_assets.flagging.policy import FlaggingPolicy
from dsa110_assets.flagging.quality import AntennaVerdict, band_edge_channels
from dsa110_assets.flagging.summary import FlagFractions, flag_fractions, flag_waterfall_png
from dsa110_assets.flagging.versions import (
    list_flag_versions,
    restore_flag_version,
    save_flag_version,
)
from dsa110_assets.registry import Registry
from dsa110_assets.registry.flags import FlagStepRow, record_flag_steps
from dsa110_assets.registry.products import MSRecord
from dsa110_assets.registry.stage_run import stage_run
from dsa110_assets.timing import Stopwatch

STAGE = "flag"
#: The flag version of the MS as converted, and of the MS after every flagging step.
BEFORE_FLAGGING = "before_flagging"
FLAGGED = "flagged"


@dataclass
class FlagOutcome:
    """What flagging did to a group (for the asset's metadata and the closing note)."""

    steps: list[FlagStepRow]
    antennas: AntennaVerdict
    flagged_antennas: list[str]
    fractions: FlagFractions
    png: bytes
    timings: dict[str, float] = field(default_factory=dict)


def _version_before(step: str) -> str:
    """Return the flag version saved before ``step`` (the first step's is the converter's)."""
    return BEFORE_FLAGGING if step == STEPS[0] else f"before_{step}"


def _start_from_converter_flags(record: MSRecord) -> None:
    """Restore the flags as converted when an earlier run saved them, else save them."""
    if any(v.name == BEFORE_FLAGGING for v in list_flag_versions(record.path)):
        restore_flag_version(record.path, BEFORE_FLAGGING)
    else:
        save_flag_version(
            record.path, BEFORE_FLAGGING, "flags as converted, before the pipeline's flagging"
        )


def _step_detail(step: str, findings: FlagFindings, policy: FlaggingPolicy) -> dict[str, object]:
    """Return what a step found, for ``flag_summary.detail`` and the asset's metadata."""
    layout = findings.layout
    names = layout.antenna_names
    if step == "quality":
        verdict = findings.antennas
        return {
            "dead_antennas": [names[a] for a in verdict.dead],
            "out_of_range_antennas": [names[a] for a in verdict.out_of_range],
            "noisy_antennas": [names[a] for a in verdict.noisy],
            "band_edge_channels": int(
                band_edge_channels(layout.band_freqs_hz, policy.band_edge_mhz).sum()
            ),
            "autocorrelations_flagged": policy.flag_autocorrelations,
        }
    return {
        "strategy": policy.strategy.name,
        "workers": policy.n_workers,
        "enabled": policy.aoflagger,
    }


def flag_and_register(registry: Registry, record: MSRecord, policy: FlaggingPolicy) -> FlagOutcome:
    """Flag ``record``'s MS step by step, save the flag versions and record the fractions.

    Raises
    ------
    dsa110_assets.errors.PipelineError
        An MS in another layout, a strategy AOFlagger cannot run, a flag version that
        cannot be saved (after recording the stage as failed).
    """
    with stage_run(registry, record.group_id, STAGE, "flagging") as run:
        _start_from_converter_flags(record)
        findings = find_flags(record.path, policy)
        layout = findings.layout
        current = findings.existing.copy()
        rows: list[FlagStepRow] = []
        timings = dict(findings.timings)
        for step in STEPS:
            clock = Stopwatch()
            version = _version_before(step)
            if step != STEPS[0]:
                save_flag_version(record.path, version, f"before the pipeline's {step} step")
            before = flag_fractions(layout, current).total
            write_step_flags(record.path, findings, step)
            current |= findings.step_mask(step)
            after = flag_fractions(layout, current)
            timings[f"{step}_write_s"] = clock.elapsed_s
            rows.append(
                FlagStepRow(
                    group_id=record.group_id,
                    step=step,
                    version_before=version,
                    fraction_before=before,
                    fraction_after=after.total,
                    per_spw=after.per_spw,
                    per_antenna=after.per_antenna,
                    per_integration=after.per_integration,
                    detail=_step_detail(step, findings, policy),
                    duration_s=timings[f"{step}_write_s"],
                )
            )
        save_flag_version(record.path, FLAGGED, "after the pipeline's flagging")
        fractions = flag_fractions(layout, current)
        png = flag_waterfall_png(layout, current)
        record_flag_steps(registry, record.path, rows, fractions.total)
        run.done(f"{fractions.total:.2%} of cross-correlation samples flagged")
    names = [layout.antenna_names[a] for a in findings.antennas.flagged]
    return FlagOutcome(rows, findings.antennas, names, fractions, png, timings)
