"""Dagster definitions of the daily stage (assets and checks)."""
