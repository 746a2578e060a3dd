"""Which quick looks (or less well calibrated groups) a calibrator solution now covers.

The apply step never waits: a group without a calibrator solution is imaged at once. The
calibration sensor asks :func:`groups_to_recalibrate` which of them can now be calibrated
better, and re-runs them.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsa110_assets.processing.cal_choice import CalMethod, GainChoice, choose_gains
from dsa110_assets.processing.calibrate_step import CalibrationPolicy
from dsa110_assets.registry import Registry
from dsa110_assets.registry.caltables import groups_not_calibrator_calibrated


@dataclass(frozen=True)
class Recalibration:
    """A quick-look (or less well calibrated) group that a calibrator solution now covers."""

    group_id: str
    applied: str
    choice: GainChoice

    @property
    def run_key(self) -> str:
        """The calibration sensor's run key: one run per group and improvement."""
        return f"{self.group_id}:recalibrate:{self.choice.key}"


def groups_to_recalibrate(
    registry: Registry, policy: CalibrationPolicy, *, limit: int = 100
) -> list[Recalibration]:
    """Return the imaged groups whose calibration would now be better, oldest first.

    A group qualifies when it is ``uncalibrated`` or ``field-model`` and a calibrator solution
    now covers it, or ``nearest`` and it can now be interpolated (or has its own calibrator
    solve); only once its image stage
    is done and no stage of it is running (so a re-run never overlaps the first run).
    """
    rows = groups_not_calibrator_calibrated(registry)
    found: list[Recalibration] = []
    for group_id, mid_mjd, method in rows:
        choice, _ = choose_gains(
            registry, float(mid_mjd), window_h=policy.gain_window_h, group_id=group_id
        )
        if choice is None:
            continue
        if method == CalMethod.NEAREST.value and choice.method is CalMethod.NEAREST:
            continue
        found.append(Recalibration(group_id, method, choice))
        if len(found) >= limit:
            break
    return found
