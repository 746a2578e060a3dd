"""Prometheus's text exposition format (version 0.0.4), written by hand.

``/metrics`` needs a dozen gauges; the format is a few lines of rules, so it is written here
rather than adding ``prometheus_client`` as a dependency. The rules kept: one ``# HELP`` and
one ``# TYPE`` line per family, before its samples; metric and label names of the allowed
characters (checked: a bad name is a bug here, not data); label values escaped (backslash,
double quote, newline), so a path or a message from the registry cannot break a line or
forge a sample; ``HELP`` text escaped likewise (backslash, newline); values as Go's
``ParseFloat`` reads them, with ``NaN``, ``+Inf`` and ``-Inf``; the body ends with a newline.

See https://prometheus.io/docs/instrumenting/exposition_formats/.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

#: The ``Content-Type`` Prometheus expects for this format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*", re.ASCII)
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*", re.ASCII)

MetricType = Literal["gauge", "counter", "summary", "histogram", "untyped"]


def escape_label_value(value: object) -> str:
    r"""Return ``value`` as the text between a label's quotes.

    Examples
    --------
    >>> escape_label_value('a "b"\\c\nd')
    'a \\"b\\"\\\\c\\nd'
    """
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """Return ``text`` as a ``# HELP`` line may carry it (backslash, newline escaped)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """Return a sample's value: integers without a point, ``NaN``, ``+Inf``, ``-Inf``.

    Examples
    --------
    >>> [format_value(v) for v in (3, 0.25, float("inf"), float("nan"))]
    ['3', '0.25', '+Inf', 'NaN']
    """
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    if number.is_integer() and abs(number) < 2**53:
        return str(int(number))
    return repr(number)


@dataclass(frozen=True)
class Sample:
    """One line of a family: labels (in order) and a value; ``suffix`` as in ``_sum``."""

    labels: tuple[tuple[str, str], ...]
    value: float
    suffix: str = ""


@dataclass
class MetricFamily:
    """A metric: its name, help text, type and samples.

    Raises
    ------
    ValueError
        The name is not a valid metric name.
    """

    name: str
    help: str
    type: MetricType = "gauge"
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not _METRIC_NAME.fullmatch(self.name):
            raise ValueError(f"{self.name!r} is not a Prometheus metric name")

    def add(self, value: float, suffix: str = "", **labels: object) -> MetricFamily:
        """Append a sample with ``labels`` (in the order given); return the family.

        Raises
        ------
        ValueError
            A label name is not valid, or is reserved (``__`` prefix).
        """
        for name in labels:
            if not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
                raise ValueError(f"{name!r} is not a Prometheus label name")
        if suffix and not _METRIC_NAME.fullmatch(self.name + suffix):
            raise ValueError(f"{suffix!r} does not make a metric name")
        self.samples.append(
            Sample(tuple((k, str(v)) for k, v in labels.items()), float(value), suffix)
        )
        return self


def render_sample(name: str, sample: Sample) -> str:
    """Return one sample line, ``name{label="value",...} value``."""
    labels = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in sample.labels)
    return (
        f"{name}{sample.suffix}{'{' + labels + '}' if labels else ''} {format_value(sample.value)}"
    )


def render(families: Iterable[MetricFamily]) -> str:
    """Return the exposition text of ``families``, each ``HELP``, ``TYPE`` then its samples.

    Raises
    ------
    ValueError
        Two families share a name.
    """
    lines: list[str] = []
    seen: set[str] = set()
    for family in families:
        if family.name in seen:
            raise ValueError(f"metric family {family.name!r} appears twice")
        seen.add(family.name)
        lines.append(f"# HELP {family.name} {escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.type}")
        lines.extend(render_sample(family.name, s) for s in family.samples)
    return "\n".join(lines) + "\n"
