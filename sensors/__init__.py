"""Dagster sensors: the shell that turns registry and folder state into run requests."""
