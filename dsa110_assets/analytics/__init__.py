"""Read-only analytics over the registry: light curves, statistics and Parquet export.

Modules, one idea each: :mod:`.attach` (DuckDB with the registry attached, and the UTC
date of every row), :mod:`.queries` (light curves, variability, counts and statistics) and
:mod:`.export` (Parquet export). Their public names are importable from here.

DuckDB and plain SQLite only read the registry, which stays the single source of truth.
"""

from dsa110_assets.analytics.attach import DATE_SOURCES, connect_registry
from dsa110_assets.analytics.export import (
    EXPORT_TABLES,
    ExportError,
    ExportReport,
    TableExport,
    export_parquet,
)
from dsa110_assets.analytics.queries import (
    LightCurvePoint,
    SourceVariability,
    folder_bytes,
    light_curve,
    pipeline_stats,
    products_per_day,
    variability,
)

__all__ = [
    "DATE_SOURCES",
    "EXPORT_TABLES",
    "ExportError",
    "ExportReport",
    "LightCurvePoint",
    "SourceVariability",
    "TableExport",
    "connect_registry",
    "export_parquet",
    "folder_bytes",
    "light_curve",
    "pipeline_stats",
    "products_per_day",
    "variability",
]
