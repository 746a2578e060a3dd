"""Dagster definitions of the conversion stage (assets and checks)."""
