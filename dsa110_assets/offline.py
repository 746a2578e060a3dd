"""Keep astropy from reaching the network: the platform runs where only its files are.

Earth-orientation data come from the pinned ``astropy-iers-data`` package; auto-download is off
so a time outside its table warns instead of hanging on a download.
"""

from astropy.utils import iers


def configure_astropy_offline() -> None:
    """Turn off astropy's IERS downloads (done on import; callable again after a reset)."""
    iers.conf.auto_download = False
    iers.conf.auto_max_age = None
    iers.conf.remote_timeout = 0.1


configure_astropy_offline()
