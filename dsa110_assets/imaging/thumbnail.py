"""PNG previews of FITS images, and an inline markdown form small enough for Dagster metadata.

Deterministic: the same FITS gives the same PNG bytes (fixed stretch, fixed resampling, no
timestamps in the PNG), so a thumbnail can always be regenerated from its image. Orientation
follows the sky convention: north up and RA increasing to the left, read from the WCS (a
standard radio image, with RA decreasing along x and Dec increasing along y, is just flipped
vertically because image row 0 is drawn at the top).
"""

from __future__ import annotations

import base64
import io
import os
import secrets
from pathlib import Path

import numpy as np
from PIL import Image

from dsa110_assets.imaging.image_stats import read_image

STRETCHES = ("asinh", "percentile")
_LOW_PERCENTILE = 0.5
_HIGH_PERCENTILE = 99.5
_ASINH_SOFTENING = 0.02  # fraction of the range where asinh turns from linear to logarithmic


def _orient(data: np.ndarray, wcs) -> np.ndarray:
    """Flip so that north is up and RA (east) increases to the left when row 0 is the top."""
    pc = wcs.pixel_scale_matrix  # d(world)/d(pixel): columns x, y; rows RA, Dec
    out = data
    if pc[0, 0] > 0:  # RA grows with x: east would be on the right
        out = out[:, ::-1]
    if pc[1, 1] > 0:  # Dec grows with y: row 0 is south, draw it at the bottom
        out = out[::-1, :]
    return out


def _stretch(data: np.ndarray, stretch: str) -> np.ndarray:
    """Map finite pixels to 0..1 (NaN stays NaN)."""
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return np.full(data.shape, np.nan)
    lo, hi = np.percentile(finite, [_LOW_PERCENTILE, _HIGH_PERCENTILE])
    if stretch == "asinh":
        hi = max(hi, float(finite.max()))
    if not hi > lo:
        return np.where(np.isfinite(data), 0.0, np.nan)
    scaled = np.clip((data - lo) / (hi - lo), 0.0, 1.0)
    if stretch == "asinh":
        a = _ASINH_SOFTENING
        scaled = np.arcsinh(scaled / a) / np.arcsinh(1.0 / a)
    return scaled


def _block_mean(data: np.ndarray, factor: int) -> np.ndarray:
    """Return the NaN-aware mean over ``factor`` x ``factor`` blocks (edges trimmed).

    A cheap first reduction of large images before the stretch and the final Lanczos
    resampling.
    """
    if factor <= 1:
        return data
    ny, nx = (data.shape[0] // factor) * factor, (data.shape[1] // factor) * factor
    blocks = data[:ny, :nx].reshape(ny // factor, factor, nx // factor, factor)
    finite = np.isfinite(blocks)
    count = finite.sum(axis=(1, 3))
    total = np.where(finite, blocks, 0.0).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def render_thumbnail(fits_path: str | Path, *, size: int = 512, stretch: str = "asinh") -> bytes:
    """PNG bytes of the image, longest side ``size`` pixels, 8-bit grayscale.

    NaN pixels (e.g. below the primary-beam cutoff) are drawn black.
    """
    if stretch not in STRETCHES:
        raise ValueError(f"stretch must be one of {STRETCHES}, got {stretch!r}")
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    img = read_image(fits_path)
    data = _block_mean(_orient(img.data, img.wcs), max(1, max(img.data.shape) // (2 * size)))
    scaled = _stretch(data, stretch)
    grey = np.where(np.isfinite(scaled), np.round(scaled * 255.0), 0.0).astype(np.uint8)
    picture = Image.fromarray(grey, mode="L")
    ny, nx = grey.shape
    factor = size / max(nx, ny)
    if factor < 1.0:
        shape = (max(1, round(nx * factor)), max(1, round(ny * factor)))
        picture = picture.resize(shape, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def make_thumbnail(
    fits_path: str | Path, png_path: str | Path, *, size: int = 512, stretch: str = "asinh"
) -> Path:
    """Write the thumbnail of ``fits_path`` to ``png_path`` atomically; returns the path."""
    png = render_thumbnail(fits_path, size=size, stretch=stretch)
    target = Path(png_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_bytes(png)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def thumbnail_markdown(png_path: str | Path, *, max_px: int = 256, alt: str | None = None) -> str:
    """Markdown image with the PNG inline (base64), shrunk to ``max_px`` on its longest side.

    Meant for ``MetadataValue.md``: at 256 px a grayscale thumbnail is ~30-80 kB of base64.
    """
    path = Path(png_path)
    with Image.open(path) as picture:
        picture.load()
        small = picture.convert("L")
    if max(small.size) > max_px:
        factor = max_px / max(small.size)
        shape = (max(1, round(small.size[0] * factor)), max(1, round(small.size[1] * factor)))
        small = small.resize(shape, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    small.save(buffer, format="PNG", optimize=True)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    label = alt if alt is not None else path.stem
    return f"![{label}](data:image/png;base64,{encoded})"
