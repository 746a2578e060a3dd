"""Dagster resources: configuration, the wall clock, WSClean and the tier IO manager."""
