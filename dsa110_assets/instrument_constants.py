"""The DSA-110's numbers: band, channels, integrations, dish, array centre, station ranges.

Plain constants in a module that imports nothing, so what only needs a number (the subband
file names in :mod:`dsa110_assets.naming`, the status API, the ``dsa110`` parser) does not
pay for astropy and scipy, which :mod:`dsa110_assets.instrument` loads for the station
layout and the primary beam (seconds at every start). :mod:`dsa110_assets.instrument`
re-exports every name here: it stays the one place to import the instrument from.
"""

N_SUBBANDS = 16
CHANNELS_PER_SUBBAND = 48
CHANNEL_WIDTH_HZ = 244140.625
SUBBAND_WIDTH_HZ = CHANNELS_PER_SUBBAND * CHANNEL_WIDTH_HZ  # 11.71875 MHz
BAND_TOP_HZ = 1498.75e6  # upper edge of sb00; sb00 is the HIGHEST subband
BAND_BOTTOM_HZ = BAND_TOP_HZ - N_SUBBANDS * SUBBAND_WIDTH_HZ  # 1311.25 MHz
INTEGRATION_S = 12.884902
INTEGRATIONS_PER_FILE = 24
FILE_DURATION_S = INTEGRATION_S * INTEGRATIONS_PER_FILE  # about 309.2 s
DISH_DIAMETER_M = 4.65
SEFD_JY = 6500.0
POLARIZATIONS = (-5, -6)  # XX, YY (AIPS memo 117)

N_STATIONS = 117
ARRAY_LAT_DEG = 37.2339
ARRAY_LON_DEG = -118.2825
ARRAY_HEIGHT_M = 1182.0

# Station numbers (1-based, inclusive) of each arm and how many the correlator carries.
EW_STATIONS = range(1, 52)  # DSA-001..051, one latitude
NS_STATIONS = range(52, 103)  # DSA-052..102, one longitude
OUTRIGGER_STATIONS = range(103, 118)  # DSA-103..117
N_DATA_EW = 47
N_DATA_NS = 35
N_DATA_OUTRIGGERS = 14
N_DATA_ANTENNAS = N_DATA_EW + N_DATA_NS + N_DATA_OUTRIGGERS  # 96

SPEED_OF_LIGHT_M_S = 299_792_458.0
