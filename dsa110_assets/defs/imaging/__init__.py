"""Dagster definitions of the imaging stage (assets and checks)."""
