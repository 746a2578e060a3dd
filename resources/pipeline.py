"""The pipeline resource: settings and registry access for assets and sensors.

Dagster builds a resource once per run (and once per sensor tick), so the :class:`Settings`
are read from the environment, and their folders made, once per resource instance rather than
on every :meth:`PipelineResource.settings` call.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from pydantic import PrivateAttr, field_validator

from dsa110_assets.processing.calibrate_step import CalibrationPolicy
from dsa110_assets.registry import Registry
from dsa110_assets.settings import NumberRule, Settings
from resources.defaults import default_of

_DAY_S = 86400.0
#: The kind and range of every number of the resource: a run config or a deployment that sets
#: one out of range fails when the resource is built, naming the field, not hours later.
NUMBER_RULES: dict[str, NumberRule] = {
    "group_timeout_s": NumberRule(float, 0.0, 7 * _DAY_S),  # 0: never wait for stragglers
    "min_subbands": NumberRule(int, 1, 16),
    "max_files_per_tick": NumberRule(int, 1, 1_000_000),
    "uv_min_klambda": NumberRule(float, 0.0, 100.0),
    "bandpass_validity_h": NumberRule(float, 0.0, 24.0 * 365, low_open=True),
    "gain_window_h": NumberRule(float, 0.0, 24.0 * 365, low_open=True),
    "min_beam_response": NumberRule(float, 0.0, 1.0, low_open=True),
    "field_min_snr": NumberRule(float, 0.0, 1e6, low_open=True),
    "pb_cutoff": NumberRule(float, 0.0, 1.0, low_open=True, high_open=True),
    "eta_threshold": NumberRule(float, 0.0, None),
    "v_threshold": NumberRule(float, 0.0, None),
    "vs_threshold": NumberRule(float, 0.0, None),
    "m_threshold": NumberRule(float, 0.0, None),
    "min_epochs": NumberRule(int, 2, 100_000),
}

#: The Settings fields that are folders (every field without a number rule): a resource field
#: of the same name overrides its ``PIPELINE_*`` variable.
FOLDER_FIELDS = tuple(name for name in Settings.ENV if name not in Settings.NUMBER_RULES)


class PipelineResource(dg.ConfigurableResource):
    """Platform configuration for Dagster code.

    Every field defaults to the ``PIPELINE_*`` environment (see the README); a deployment or a
    test overrides fields here instead of touching the environment.
    """

    input_dir: str | None = None
    scratch_dir: str | None = None
    output_dir: str | None = None
    state_dir: str | None = None
    db_path: str | None = None
    tmpfs_dir: str | None = None
    archive_dir: str | None = None
    group_timeout_s: float = 600.0
    min_subbands: int = 12
    max_files_per_tick: int = 4000
    # Calibration: defaults and meanings are CalibrationPolicy's (calibrate_step): gains reach
    # gain_window_h either side; with no calibrator there, solve on the field model, accepted
    # at field_min_snr.
    uv_min_klambda: float = default_of(CalibrationPolicy, "uv_min_klambda")
    bandpass_validity_h: float = default_of(CalibrationPolicy, "bandpass_validity_h")
    gain_window_h: float = default_of(CalibrationPolicy, "gain_window_h")
    min_beam_response: float = default_of(CalibrationPolicy, "min_beam_response")
    field_model_calibration: bool = default_of(CalibrationPolicy, "field_model")
    field_min_snr: float = default_of(CalibrationPolicy, "field_min_snr")
    # Imaging: primary-beam cutoff of the pb-corrected image.
    pb_cutoff: float = 0.2
    # Variability candidates (Mooley et al. 2016): None takes the population's mean + 3 sigma.
    eta_threshold: float | None = None
    v_threshold: float | None = None
    vs_threshold: float = 4.3
    m_threshold: float = 0.26
    min_epochs: int = 3

    _settings: Settings | None = PrivateAttr(default=None)

    @field_validator(*NUMBER_RULES, mode="after")
    @classmethod
    def _number_in_range(cls, value: float | None, info) -> float | None:
        """Refuse a number not finite or out of range (NaN, inf, negative counts), by name."""
        if value is None:
            return None
        try:
            return NUMBER_RULES[info.field_name].check(value)
        except ValueError as exc:
            raise ValueError(f"{info.field_name}: {exc}") from None

    def variability_thresholds(self) -> dict[str, float | None]:
        """Return the variability-candidate thresholds, by the metric functions' names."""
        return {
            "eta_threshold": self.eta_threshold,
            "v_threshold": self.v_threshold,
            "vs_threshold": self.vs_threshold,
            "m_threshold": self.m_threshold,
        }

    def settings(self) -> Settings:
        """Return the platform settings, built once for this resource instance.

        The first call reads the ``PIPELINE_*`` environment under this resource's overrides
        and makes (and proves writable) every folder; later calls return the same object.

        Raises
        ------
        SettingsError
            Naming the variable whose value or folder is unusable (nothing is cached then).
        """
        if self._settings is None:
            overrides = {
                Settings.ENV[name]: value
                for name in FOLDER_FIELDS
                if (value := getattr(self, name)) is not None
            }
            self._settings = Settings.from_env({**os.environ, **overrides}).ensure_dirs()
        return self._settings

    def calibration_policy(self) -> CalibrationPolicy:
        """Return the calibration policy these fields describe (the rest at its defaults)."""
        return CalibrationPolicy(
            uv_min_klambda=self.uv_min_klambda,
            bandpass_validity_h=self.bandpass_validity_h,
            gain_window_h=self.gain_window_h,
            min_beam_response=self.min_beam_response,
            field_model=self.field_model_calibration,
            field_min_snr=self.field_min_snr,
        )

    @contextmanager
    def registry(self) -> Iterator[Registry]:
        """Open the registry at the settings' ``db_path`` for the ``with`` block; then close it."""
        registry = Registry(self.settings().db_path)
        try:
            yield registry
        finally:
            registry.close()
