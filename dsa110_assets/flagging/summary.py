"""How much of a group is flagged, where: per window, antenna and integration, and a picture.

Fractions are of cross-correlation samples (baseline, integration, channel; a sample flagged
in any correlation counts once): autocorrelations are never imaged, so counting them would
make a group look better or worse than its image will be. The picture is what an astronomer
looks at first: the fraction flagged over (integration, frequency), where a transmitter is a
vertical line and a burst a horizontal one, and the fraction per antenna under it.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from dsa110_assets.flagging.ms_layout import FlagLayout


@dataclass(frozen=True)
class FlagFractions:
    """Fractions of cross-correlation samples flagged.

    Attributes
    ----------
    total
        Over the whole group.
    per_spw
        ``{"spw03": fraction}`` by MS spectral window (row block), in band order.
    per_antenna
        ``{antenna name: fraction}`` over the baselines of each antenna.
    per_integration
        One fraction per integration.
    """

    total: float
    per_spw: dict[str, float]
    per_antenna: dict[str, float]
    per_integration: list[float]


def flag_fractions(layout: FlagLayout, mask: np.ndarray) -> FlagFractions:
    """Summarise ``mask`` (n_times, n_baselines, n_band_chan) over cross-correlations."""
    cross = ~layout.is_auto
    m = mask[:, cross, :]
    if m.size == 0:
        return FlagFractions(0.0, {}, {}, [])
    nc = layout.n_chan
    per_spw = {
        f"spw{int(block):02d}": _round(m[:, :, p * nc : (p + 1) * nc].mean())
        for p, block in enumerate(layout.band_order)
    }
    per_baseline = m.mean(axis=(0, 2))
    a1, a2 = layout.antenna1[cross], layout.antenna2[cross]
    per_antenna = {}
    for a in np.unique(np.r_[a1, a2]).tolist():
        mine = (a1 == a) | (a2 == a)
        per_antenna[_name(layout, a)] = _round(per_baseline[mine].mean())
    return FlagFractions(
        total=_round(m.mean()),
        per_spw=per_spw,
        per_antenna=per_antenna,
        per_integration=[_round(v) for v in m.mean(axis=(1, 2))],
    )


def _round(value: float) -> float:
    return round(float(value), 6)


def _name(layout: FlagLayout, antenna: int) -> str:
    names = layout.antenna_names
    return names[antenna] if 0 <= antenna < len(names) else str(antenna)


def flag_waterfall_png(
    layout: FlagLayout, mask: np.ndarray, *, width: int = 384, height: int = 96
) -> bytes:
    """PNG of the fraction flagged over (integration, band channel), with antennas below.

    Top: time down, frequency to the right (the band's low end on the left), white where
    every baseline is flagged. Bottom: one bar per antenna, its height its fraction flagged.
    """
    cross = ~layout.is_auto
    waterfall = mask[:, cross, :].mean(axis=1) if cross.any() else np.zeros(mask[:, 0].shape)
    grey = np.round(np.clip(waterfall, 0.0, 1.0) * 255.0).astype(np.uint8)
    top = Image.fromarray(grey, mode="L").resize((width, height), Image.Resampling.NEAREST)
    fractions = flag_fractions(layout, mask).per_antenna
    bars_h = 40
    picture = Image.new("L", (width, height + bars_h + 2), 64)
    picture.paste(top, (0, 0))
    draw = ImageDraw.Draw(picture)
    values = list(fractions.values())
    if values:
        step = width / len(values)
        for k, value in enumerate(values):
            x0 = int(k * step)
            x1 = max(x0, int((k + 1) * step) - 1)
            y1 = height + 2 + bars_h
            draw.rectangle([x0, y1 - int(round(value * bars_h)), x1, y1], fill=255)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def png_markdown(png: bytes, alt: str) -> str:
    """Return the PNG as inline markdown for ``dagster.MetadataValue.md``."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
