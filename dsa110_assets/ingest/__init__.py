"""Ingest: finding correlator files, normalizing their names and registering them."""

from dsa110_assets.ingest.clustering import GroupIndex
from dsa110_assets.ingest.normalize import (
    FileOutcome,
    IngestReport,
    ingest_directory,
    normalize_directory,
    normalize_subband_on_ingest,
    normalize_subband_path,
)

__all__ = [
    "FileOutcome",
    "GroupIndex",
    "IngestReport",
    "ingest_directory",
    "normalize_directory",
    "normalize_subband_on_ingest",
    "normalize_subband_path",
]
