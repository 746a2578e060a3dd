"""The image asset through the imaging copy: channels averaged, the group's MS left alone.

A calibrator group (12 antennas, 16 x 4 channels of 2.9 MHz) runs the whole ``process_group``
job with the channel width allowed to reach 6 MHz, so pairs of channels are averaged into an
imaging copy of the MS (the production setting, 1 MHz, averages DSA-110's 244 kHz channels
in fours; these simulated channels are already wider). What must hold: the image is made from
the copy (``channels_averaged`` 2, self-calibration ran on it: switched on for this calibrator
group, which by default skips it), the group's own MS is exactly
as calibration left it (one field per integration, no rephase, no columns added), and no
copy is left on the scratch tier. Flux accuracy at production widths is the benchmark's and
``tests/test_casa.py``'s (smearing against Bridle & Schwab): 6 MHz channels smear on purpose.
"""

from __future__ import annotations

import shutil

import dagster as dg
import numpy as np
import pytest
from casacore import tables as pt
from helpers import land_observations

from dsa110_assets.catalogs.survey import ingest_survey
from dsa110_assets.definitions import build_definitions
from dsa110_assets.imaging.rephase import PHASED_KEYWORD
from dsa110_assets.registry import Registry
from dsa110_assets.storage.placement import Tier, tier_root
from resources.selfcal import SelfcalResource
from resources.wsclean import WSCleanResource

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning"),
    pytest.mark.skipif(shutil.which("wsclean") is None, reason="wsclean is not installed"),
]

SIM = dict(
    n_groups=1,
    n_antennas=12,
    n_channels=4,
    seed=21,
    calibrator="3C286",
    n_background_sources=6,
    noise=True,
    corruptions=True,
)
WSCLEAN = WSCleanResource(max_size=1024, threads=2, max_channel_width_hz=6e6)
SELFCAL = SelfcalResource(on_calibrator_groups=True, min_noise_over_thermal=0.0)


def _ms_state(ms) -> dict:
    with pt.table(str(ms), ack=False) as t:
        return {
            "columns": sorted(t.colnames()),
            "fields": int(np.unique(t.getcol("FIELD_ID")).size),
            "phased": PHASED_KEYWORD in t.getkeywords(),
            "uvw": t.getcol("UVW", 0, 500).copy(),
        }


def test_the_image_comes_from_an_averaged_copy_and_the_ms_is_untouched(tmp_path) -> None:
    pipeline, sim = land_observations(tmp_path, **SIM)
    settings = pipeline.settings()
    ingest_survey("nvss", sim.nvss_catalog_path, settings.state_dir / "catalogs")
    defs = build_definitions(pipeline, WSCLEAN, selfcal=SELFCAL)
    with dg.instance_for_test() as instance:
        sensor = defs.resolve_sensor_def("incoming_sensor")
        tick = sensor(
            dg.build_sensor_context(
                instance=instance, definitions=defs, resources={"pipeline": pipeline}
            )
        )
        (group_id,) = [r.partition_key for r in tick.run_requests]
        instance.add_dynamic_partitions("group_id", [group_id])
        job = defs.resolve_job_def("process_group")
        before_image = job.execute_in_process(
            partition_key=group_id,
            instance=instance,
            asset_selection=[
                dg.AssetKey(k)
                for k in ("subband_group", "measurement_set", "flagged_ms")
                + ("calibration_tables", "calibrated_ms")
            ],
        )
        assert before_image.success
        ms = settings.output_dir / f"{group_id}.ms"
        calibrated = _ms_state(ms)
        run = job.execute_in_process(
            partition_key=group_id,
            instance=instance,
            asset_selection=[dg.AssetKey("image")],
        )
    assert run.success
    (event,) = [e for e in run.get_asset_materialization_events()]
    metadata = {k: v.value for k, v in event.materialization.metadata.items()}
    assert metadata["channels_averaged"] == 2
    assert metadata["calibrated"] and metadata["imaging_ms_s"] > 0
    assert "rephase_s" not in metadata
    assert metadata["noise_mjy_per_beam"] > 0 and metadata["dynamic_range"] > 20
    after = _ms_state(ms)
    assert after["columns"] == calibrated["columns"]  # no MODEL/SELFCAL columns added
    assert after["fields"] == calibrated["fields"] > 1 and not after["phased"]
    np.testing.assert_array_equal(after["uvw"], calibrated["uvw"])
    scratch = tier_root(settings, Tier.SSD_SCRATCH)
    assert not [p.name for p in scratch.iterdir() if ".imaging." in p.name]
    with Registry(settings.db_path, readonly=True) as registry:
        (ms_path,) = registry.execute(
            "SELECT DISTINCT ms_path FROM images WHERE group_id = ?", (group_id,)
        ).fetchone()
        rounds = registry.execute(
            "SELECT COUNT(*) FROM selfcal_rounds WHERE group_id = ?", (group_id,)
        ).fetchone()[0]
    assert ms_path == str(ms)  # the product's MS is the group's, not the removed copy
    assert rounds >= 1  # self-calibration ran on the copy
