"""The calibration sensor: quick looks are re-calibrated when a calibrator solution appears.

Why a sensor and not a waiting run: a calibrator may transit hours after a target (gains hold
+/-12 h), so a run that waited for it would hold a worker for hours. Instead every group is
imaged at once with the best calibration available then (possibly none: a quick look), and
this sensor watches the registry: when a calibrator solution now covers an ``uncalibrated``
or ``field-model`` group (or lets a ``nearest`` one be interpolated), it requests that
partition's calibrated products, which replace the quick look's files and registry rows in
place (same paths, upserted rows). The run key is the group plus the choice
(:attr:`~dsa110_assets.processing.recalibration.Recalibration.run_key`), so each improvement is
requested exactly once.
"""

from typing import Any

import dagster as dg

from dsa110_assets.processing.recalibration import groups_to_recalibrate
from resources.pipeline import PipelineResource
from sensors.incoming import group_run_tags

#: What a re-calibration re-materializes for its partition.
RECALIBRATED_ASSETS = (
    dg.AssetKey("calibrated_ms"),
    dg.AssetKey("image"),
    dg.AssetKey("thumbnail"),
    dg.AssetKey("group_photometry"),
)


def build_calibration_sensor(
    target: dg.AssetSelection | dg.JobDefinition | Any,
) -> dg.SensorDefinition:
    """Build the calibration sensor, aimed at the job that holds the per-group assets.

    Parameters
    ----------
    target
        The per-group job (or a selection holding :data:`RECALIBRATED_ASSETS`).
    """

    @dg.sensor(
        name="calibration_sensor",
        target=target,
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=60,
        description="Requests calibrated_ms, image, thumbnail and group_photometry again for "
        "each imaged group that a calibrator solution now covers better than what it was "
        "imaged with (uncalibrated quick look or field model -> calibrator; nearest -> "
        "interpolated). Run key = group and the new choice.",
    )
    def calibration_sensor(context: dg.SensorEvaluationContext, pipeline: PipelineResource):
        try:
            with pipeline.registry() as registry:
                found = groups_to_recalibrate(registry, pipeline.calibration_policy())
        except Exception as exc:  # the sensor never raises: the next tick tries again
            context.log.exception("calibration sensor tick failed")
            return dg.SensorResult(skip_reason=f"calibration tick failed: {exc}")
        requests = []
        for item in found:
            context.log.info(
                f"{item.group_id}: {item.applied} -> {item.choice.method.value} "
                f"({', '.join(str(s.group_id) for s in item.choice.solves)}, "
                f"{item.choice.age_h:.2f} h)"
            )
            requests.append(
                dg.RunRequest(
                    partition_key=item.group_id,
                    run_key=item.run_key,
                    asset_selection=list(RECALIBRATED_ASSETS),
                    # The queue's per-group limit and oldest-first order hold for these too.
                    tags={
                        **group_run_tags(item.group_id),
                        "dsa110/recalibration": item.choice.key,
                    },
                )
            )
        if not requests:
            return dg.SensorResult(skip_reason="no quick look is covered by a new calibration")
        return dg.SensorResult(run_requests=requests)

    return calibration_sensor
