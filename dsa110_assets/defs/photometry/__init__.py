"""Dagster definitions of the photometry stage (assets and checks)."""
