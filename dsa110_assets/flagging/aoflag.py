"""AOFlagger on one baseline's Stokes I amplitude, through its Python binding.

AOFlagger (Offringa et al. 2012) finds RFI as what stands out of a smooth time-frequency
background: SumThreshold over runs of samples, then the scale-invariant rank operator. The
pipeline gives it one image per baseline, ``|(XX + YY) / 2|`` over (integration, band
channel), with the data-quality flags as the input mask; the strategy is the DSA-110 Lua
file shipped in ``dsa110_assets/data``.

The binding's images are (channels, times), and it holds the GIL while it runs, so the
flagging step runs several processes, each with its own :class:`BaselineFlagger`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from dsa110_assets.errors import PipelineError


class AOFlaggerError(PipelineError, RuntimeError):
    """AOFlagger is missing, or its strategy failed to load or run."""


class BaselineFlagger:
    """A loaded strategy, run on one baseline's amplitude image at a time.

    Parameters
    ----------
    strategy
        The Lua strategy file.
    n_times, n_chan
        The image shape every call uses (one image set is reused).
    channel_width_hz
        The channels' width, given to the strategy as the Lua global ``channel_width_mhz``
        so that its smooth background has a width in MHz rather than in channels: the same
        strategy then suits the native 0.24 MHz channels and a coarsely averaged MS, where a
        fixed number of channels would smooth over the bandpass ripple and flag it.
    """

    def __init__(
        self, strategy: Path, n_times: int, n_chan: int, channel_width_hz: float | None = None
    ) -> None:
        try:
            import aoflagger
        except ImportError as exc:  # the wheel is a locked dependency; say so if it is gone
            raise AOFlaggerError(f"the aoflagger Python module is not installed: {exc}") from exc
        self._flagger = aoflagger.AOFlagger()
        try:
            self._strategy = _load_strategy(self._flagger, strategy, channel_width_hz)
        except OSError as exc:
            raise AOFlaggerError(f"AOFlagger could not read {strategy}: {exc}") from exc
        except Exception as exc:  # noqa: BLE001  (the binding raises bare RuntimeErrors)
            raise AOFlaggerError(f"AOFlagger could not load {strategy}: {exc}") from exc
        self._images = self._flagger.make_image_set(n_times, n_chan, 1)
        self._mask = self._flagger.make_flag_mask(n_times, n_chan, False)
        self.shape = (n_times, n_chan)
        self.version = self._flagger.get_version_string()

    def flag(self, amplitude: np.ndarray, flags: np.ndarray) -> np.ndarray:
        """Return AOFlagger's flags of one baseline (including the input ``flags``).

        Parameters
        ----------
        amplitude
            (n_times, n_chan) Stokes I amplitude.
        flags
            (n_times, n_chan) bool, the data-quality flags (kept and not used as data).
        """
        if amplitude.shape != self.shape or flags.shape != self.shape:
            raise ValueError(f"image shape {amplitude.shape}, expected {self.shape}")
        image = np.where(flags, 0.0, amplitude).T.astype(np.float64, order="C")
        self._images.set_image_buffer(0, image)
        self._mask.set_buffer(np.ascontiguousarray(flags.T))
        try:
            result = self._strategy.run(self._images, self._mask)
        except Exception as exc:  # noqa: BLE001  (Lua errors arrive as RuntimeError)
            raise AOFlaggerError(f"AOFlagger's strategy failed: {exc}") from exc
        return np.asarray(result.get_buffer(), dtype=bool).T


def _load_strategy(flagger, strategy: Path, channel_width_hz: float | None):  # noqa: ANN001, ANN202
    """Load ``strategy`` with ``channel_width_mhz`` defined before it (when known).

    The binding loads strategies only from files, so the preamble and the strategy are
    written to a temporary file, loaded, and the file removed.
    """
    if channel_width_hz is None:
        return flagger.load_strategy_file(str(strategy))
    if not (np.isfinite(channel_width_hz) and channel_width_hz > 0):
        raise ValueError(f"channel width {channel_width_hz} Hz is not a positive number")
    text = f"channel_width_mhz = {channel_width_hz / 1e6!r}\n" + strategy.read_text()
    fd, name = tempfile.mkstemp(suffix=".lua", prefix="dsa110-strategy-")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        return flagger.load_strategy_file(name)
    finally:
        os.unlink(name)
