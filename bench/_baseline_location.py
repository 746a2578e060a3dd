"""The code location of the benchmarks' baseline: the per-group path before issue 15.

The platform's own definitions with four settings put back: every step of a per-group run in
its own process (``dagster.multiprocess_executor``); the imager reading the group's MS at
full resolution, rephased in place (``max_channel_width_hz=None``); self-calibration on
every calibrated group, a calibrator's own and a thermal-limited one too, each round
gridding its PSF again (``on_calibrator_groups=True, min_noise_over_thermal=0,
reuse_psf=False``); and the incoming sensor ticking every 30 s. ``bench/pipeline.py
--path baseline`` serves this module to the daemon instead of ``dsa110_assets.definitions``,
so the baseline and the fast path are measured on the same files in the same run.
"""

import dagster as dg

from dsa110_assets.definitions import build_definitions
from resources.selfcal import SelfcalResource
from resources.wsclean import WSCleanResource

defs = build_definitions(
    wsclean=WSCleanResource(max_channel_width_hz=None),
    selfcal=SelfcalResource(on_calibrator_groups=True, min_noise_over_thermal=0.0, reuse_psf=False),
    group_executor=dg.multiprocess_executor,
    incoming_interval_s=30,
)
