"""Blocking asset checks: a malformed product stops its downstream assets in the same run.

Each test makes a real broken product (an image of zeros; a Measurement Set whose last rows
were removed), runs its check together with the downstream asset through ``dg.materialize``,
and asserts the downstream step never started; a good product lets the same selection run.
"""

from __future__ import annotations

import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from astropy.io import fits
from casacore.tables import table
from helpers import land_observations, tier_folders

from dsa110_assets.definitions import PER_GROUP_ASSETS, build_definitions
from dsa110_assets.defs.conversion.checks import ms_rows_and_windows
from dsa110_assets.defs.flagging.assets import flagged_ms
from dsa110_assets.defs.imaging.assets import thumbnail
from dsa110_assets.defs.imaging.checks import image_is_finite_and_nonzero
from dsa110_assets.mosaics.simulated_images import write_simulated_image
from dsa110_assets.registry import Registry
from resources.flagging import FlaggingResource
from resources.io_managers import TierIOManager
from resources.pipeline import PipelineResource
from resources.selfcal import SelfcalResource
from resources.wsclean import WSCleanResource

pytestmark = pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")

GROUP = "2026-01-14T10:00:00"


def _started_steps(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START}


def _evaluation(result: dg.ExecuteInProcessResult, name: str):
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    return evaluation


def _materialize_check_and_downstream(pipeline, check, downstream, group_id=GROUP, instance=None):
    """Run ``check`` and ``downstream`` (not the checked asset) for ``group_id``."""
    with dg.instance_for_test() if instance is None else nullcontext(instance) as instance:
        if not instance.has_dynamic_partition("group_id", group_id):
            instance.add_dynamic_partitions("group_id", [group_id])
        return dg.materialize(
            [*PER_GROUP_ASSETS, check],
            selection=dg.AssetSelection.checks(check) | dg.AssetSelection.assets(downstream),
            partition_key=group_id,
            instance=instance,
            resources={
                "pipeline": pipeline,
                "tier_io_manager": TierIOManager(pipeline=pipeline),
                "wsclean": WSCleanResource(),  # declared by the image asset; never run here
                "flagging": FlaggingResource(),  # declared by flagged_ms; never run here
                "selfcal": SelfcalResource(),  # declared by the image asset; never run here
            },
            raise_on_error=False,
        )


def _land_image(pipeline: PipelineResource) -> Path:
    """Write a real snapshot image for GROUP and register it as the imaging stage would."""
    settings = pipeline.settings()
    path, _ = write_simulated_image(
        settings.products_dir / "images" / f"{GROUP}-meridian_icrs_t12-image.fits",
        ra_deg=200.0,
        dec_deg=30.0,
        size=64,
        cell_arcsec=30.0,
        sources=[(200.0, 30.0, 0.5)],
        noise_jy=0.002,
        beam_arcsec=60.0,
        date_obs=GROUP,
    )
    now = time.time()
    with Registry(settings.db_path) as registry, registry.transaction():
        registry.execute(
            "INSERT INTO processing_queue(group_id, state, received_at, last_update,"
            " expected_subbands) VALUES (?, 'completed', ?, ?, 16)",
            (GROUP, now, now),
        )
        registry.execute(
            "INSERT INTO ms_index(path, group_id, start_mjd, end_mjd, mid_mjd, status,"
            " created_at) VALUES (?, ?, 61054.4149, 61054.4185, 61054.4167, 'converted', ?)",
            (f"/nonexistent/{GROUP}.ms", GROUP, now),
        )
        registry.execute(
            "INSERT INTO images(path, ms_path, group_id, image_type, noise_jy, center_ra_deg,"
            " center_dec_deg, created_at) VALUES (?, ?, ?, 'image', 0.002, 200.0, 30.0, ?)",
            (str(path), f"/nonexistent/{GROUP}.ms", GROUP, now),
        )
    return path


@pytest.mark.parametrize("broken", [True, False], ids=["zeros", "good"])
def test_an_image_of_zeros_stops_its_thumbnail(tmp_path, broken):
    pipeline = PipelineResource(**tier_folders(tmp_path))
    path = _land_image(pipeline)
    if broken:
        with fits.open(path, mode="update") as hdul:
            hdul[0].data = np.zeros_like(hdul[0].data)
    result = _materialize_check_and_downstream(pipeline, image_is_finite_and_nonzero, thumbnail)
    evaluation = _evaluation(result, "image_is_finite_and_nonzero")
    assert evaluation.blocking
    png = pipeline.settings().products_dir / "thumbnails" / f"{GROUP}.png"
    if broken:
        assert not evaluation.passed and not result.success
        assert "thumbnail" not in _started_steps(result)
        assert not png.exists()
    else:
        assert evaluation.passed and result.success
        assert "thumbnail" in _started_steps(result) and png.is_file()


def _drop_last_rows(ms: Path, n: int) -> None:
    """Replace ``ms`` by a deep copy without its last ``n`` rows (its storage cannot remove)."""
    shorter = ms.with_name(f"{ms.name}.shorter")
    with table(str(ms), ack=False) as main, main.selectrows(range(main.nrows() - n)) as kept:
        kept.copy(str(shorter), deep=True).close()
    shutil.rmtree(ms)
    shorter.rename(ms)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """One small observation landed, ticked in and converted to its Measurement Set."""
    pipeline, _ = land_observations(
        tmp_path_factory.mktemp("blocking"), n_groups=1, n_antennas=6, n_background_sources=1
    )
    defs = build_definitions(pipeline)
    with dg.instance_for_test() as instance:
        tick = defs.resolve_sensor_def("incoming_sensor")(
            dg.build_sensor_context(
                instance=instance, definitions=defs, resources={"pipeline": pipeline}
            )
        )
        (group_id,) = [r.partition_key for r in tick.run_requests]
        instance.add_dynamic_partitions("group_id", [group_id])
        run = defs.resolve_job_def("process_group").execute_in_process(
            partition_key=group_id,
            instance=instance,
            asset_selection=[dg.AssetKey("subband_group"), dg.AssetKey("measurement_set")],
        )
        assert run.success
        yield pipeline, group_id, instance


def test_a_truncated_measurement_set_stops_its_flagging(converted):
    pipeline, group_id, instance = converted
    result = _materialize_check_and_downstream(
        pipeline, ms_rows_and_windows, flagged_ms, group_id, instance
    )
    assert _evaluation(result, "ms_rows_and_windows").passed
    assert "flagged_ms" in _started_steps(result)  # a good MS lets it run

    ms = pipeline.settings().output_dir / f"{group_id}.ms"
    _drop_last_rows(ms, 3)
    result = _materialize_check_and_downstream(
        pipeline, ms_rows_and_windows, flagged_ms, group_id, instance
    )
    evaluation = _evaluation(result, "ms_rows_and_windows")
    assert evaluation.blocking and not evaluation.passed and not result.success
    assert "rows, expected" in evaluation.metadata["problems"].value
    assert "flagged_ms" not in _started_steps(result)
