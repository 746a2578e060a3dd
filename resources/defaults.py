"""Resource defaults read from the science dataclasses, so each default is declared once.

Why: a Dagster resource is a pydantic model and must spell out its fields, but the values
belong to the plain-Python core
(:class:`~dsa110_assets.processing.calibrate_step.CalibrationPolicy`,
:class:`~dsa110_assets.imaging.wsclean.WSCleanParams`, the keyword defaults of
:func:`~dsa110_assets.imaging.wsclean.choose_image_geometry`). Reading them through
:func:`dataclasses.fields` works for slotted dataclasses too, whose class attributes are slot
descriptors rather than defaults.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any


def default_of(cls: type, name: str) -> Any:
    """Return the declared default of dataclass ``cls``'s field ``name``.

    Parameters
    ----------
    cls
        A dataclass (slotted or not).
    name
        One of its fields with a plain default (``default_factory`` is not read).

    Raises
    ------
    LookupError
        When ``cls`` has no such field or the field has no plain default, so a renamed field
        fails when the resource module is imported instead of silently diverging.
    """
    for field in dataclasses.fields(cls):
        if field.name == name:
            if field.default is dataclasses.MISSING:
                raise LookupError(f"{cls.__name__}.{name} has no plain default")
            return field.default
    raise LookupError(f"{cls.__name__} has no field {name!r}")


def parameter_default(func: Any, name: str) -> Any:
    """Return the default of ``func``'s keyword parameter ``name``.

    Raises
    ------
    LookupError
        When ``func`` has no such parameter, or it has no default.
    """
    parameter = inspect.signature(func).parameters.get(name)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        raise LookupError(f"{func.__qualname__} has no parameter {name!r} with a default")
    return parameter.default
