"""UVH5 -> CASA Measurement Set conversion of DSA-110 correlator groups.

Modules: :mod:`.uvh5_reader` (read and validate one subband file), :mod:`.meridian`
(per-integration ICRS phase centres and UVW), :mod:`.ms_writer` (python-casacore MS writing)
and :mod:`.convert` (orchestration, staging and atomic publication; the public entry point
:func:`convert_group`).
"""

from dsa110_assets.conversion.convert import ConversionResult, convert_group, plan_staging
from dsa110_assets.conversion.uvh5_reader import InvalidSubbandFile

__all__ = ["ConversionResult", "InvalidSubbandFile", "convert_group", "plan_staging"]
