"""dsa110-assets: the DSA-110 continuum pipeline as a Dagster asset graph.

The science lives in plain modules (naming, registry, ingest, simulation, ...); Dagster assets,
sensors, resources and IO managers only wire it together.
Modules that compute with astropy import :mod:`dsa110_assets.offline` first, so astropy never
tries to download; it is not imported here because it costs ~2 s, which every CLI call would pay.
"""

__version__ = "0.1.0"
