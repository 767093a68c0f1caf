"""Pure spherical geometry shared by the data pipeline and the model (numpy only)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

EARTH_RADIUS_KM = 6371.0088  # IUGG mean radius

# Pakistan's bounding box (lon_min, lat_min, lon_max, lat_max), including Gilgit-Baltistan and
# Azad Kashmir, with a small margin for the border tolerance of the tag stage.
PAKISTAN_BBOX: tuple[float, float, float, float] = (60.80, 23.55, 77.90, 37.15)


def haversine_km(
    lat1: npt.ArrayLike, lon1: npt.ArrayLike, lat2: npt.ArrayLike, lon2: npt.ArrayLike
) -> np.ndarray:
    """Great-circle distance in km; broadcasts over numpy arrays."""
    lat1, lon1, lat2, lon2 = (
        np.radians(np.asarray(v, dtype=np.float64)) for v in (lat1, lon1, lat2, lon2)
    )
    dlat = lat2 - lat1
    dlon = lon2 - lon1
    a = np.sin(dlat / 2.0) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin(dlon / 2.0) ** 2
    return 2.0 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def valid_coordinates(lat: npt.ArrayLike, lon: npt.ArrayLike) -> np.ndarray:
    """True where (lat, lon) is finite, in range and not the (0, 0) null-island placeholder."""
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    ok = np.isfinite(lat) & np.isfinite(lon)
    with np.errstate(invalid="ignore"):
        ok &= (np.abs(lat) <= 90.0) & (np.abs(lon) <= 180.0)
        ok &= ~((lat == 0.0) & (lon == 0.0))
    return ok


def in_bbox(
    lat: npt.ArrayLike, lon: npt.ArrayLike, bbox: tuple[float, float, float, float] = PAKISTAN_BBOX
) -> np.ndarray:
    """True where (lat, lon) falls inside ``bbox`` (inclusive): a cheap vectorised pre-filter that
    drops foreign points before any per-point work; NaN coordinates are never inside."""
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    lon_min, lat_min, lon_max, lat_max = bbox
    with np.errstate(invalid="ignore"):
        return (lon >= lon_min) & (lon <= lon_max) & (lat >= lat_min) & (lat <= lat_max)
