"""UVH5 -> CASA Measurement Set conversion of DSA-110 correlator groups.

Modules: :mod:`.uvh5_reader` (open and validate one subband file's header),
:mod:`.visibility_reader` (read its visibilities), :mod:`.blocks` (map them into one window's
MS arrays), :mod:`.meridian` (per-integration ICRS phase centres and UVW), :mod:`.ms_writer`
(python-casacore MS writing), :mod:`.staging` (where the MS is staged, and the space it
needs), :mod:`.isolation` (the writer's forked child process) and :mod:`.convert`
(orchestration; the public entry point :func:`convert_group`).
"""

from dsa110_assets.conversion.convert import ConversionResult, convert_group
from dsa110_assets.conversion.staging import plan_staging
from dsa110_assets.conversion.uvh5_reader import InvalidSubbandFile

__all__ = ["ConversionResult", "InvalidSubbandFile", "convert_group", "plan_staging"]
