"""dsa110-assets: the DSA-110 continuum pipeline as a Dagster asset graph.

The science lives in plain modules (naming, registry, ingest, simulation, ...); Dagster assets,
sensors, resources and IO managers only wire it together.
"""

from dsa110_assets import offline as _offline  # noqa: F401  (astropy never downloads)

__version__ = "0.1.0"
