"""Dagster definitions of the ingest stage (assets and checks)."""
