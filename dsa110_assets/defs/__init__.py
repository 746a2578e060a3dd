"""Dagster definitions, one folder per domain (as dagster-open-platform's ``defs/``)."""
