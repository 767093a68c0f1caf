"""From hypotheses to one answer: ``mean``, ``best`` and ``mode`` aggregation.

The seed answered with the probability-weighted mean of all hypotheses. That is the right
answer only when they agree: when the model hesitates between Gilgit and Sukkur the mean sits
in Punjab, the one place every hypothesis rules out. ``mode`` aggregation first groups the
hypotheses into geographic modes and answers inside the heaviest one:

* **Grouping rule** (leader clustering, in descending probability): the most probable
  hypothesis not yet grouped starts a mode; every ungrouped hypothesis within the *link
  distance* of that leader joins it. The link distance between hypotheses i and j is
  ``max(LINK_RADII · (r_i + r_j), MIN_LINK_KM)`` with r the cells' radii: two cells whose
  discs, inflated to twice their radius, overlap describe the same place at the resolution
  the geocells have; the floor keeps tiny urban cells of one city together. Because members
  join a leader (not each other) a mode never chains along a river valley: its diameter is
  at most two link distances.
* **Choice**: the mode with the largest summed probability (ties: the one whose leader is
  more probable).
* **Province**: the province holding most of that mode's probability; the answer is the
  probability-weighted *spherical* mean of that mode's hypotheses in that province.
* **Inside the province**: a cell lies in one province, but a mean of several cells of a
  concave province (or an offset pushed over a coast) can leave it. With polygons
  (:class:`ProvinceShapes`) an answer farther than ``BORDER_TOLERANCE_KM`` outside its
  province falls back to the mode's best hypothesis point, then to that hypothesis' cell
  centre. Without polygons the province is the cells' own.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geopak_core.geo import EARTH_RADIUS_KM

log = logging.getLogger(__name__)

AGGREGATES = ("mean", "best", "mode")
LINK_RADII = 2.0
MIN_LINK_KM = 25.0
BORDER_TOLERANCE_KM = 5.0  # the tag stage's default border tolerance


def check_aggregate(name: str) -> str:
    """Validate an --aggregate name up front, so a typo is a one-line error before any model loads."""
    if name not in AGGREGATES:
        from geopak_core.errors import GeopakError

        raise GeopakError(f"aggregate must be one of {', '.join(AGGREGATES)}, got {name!r}")
    return name


def _xyz(latlon: torch.Tensor) -> torch.Tensor:
    la, lo = torch.deg2rad(latlon[..., 0].double()), torch.deg2rad(latlon[..., 1].double())
    return torch.stack([la.cos() * lo.cos(), la.cos() * lo.sin(), la.sin()], dim=-1)


def spherical_mean(latlon: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean direction of points (…, M, 2) degrees with weights (…, M) -> (…, 2)."""
    v = (_xyz(latlon) * weights.double()[..., None]).sum(dim=-2)
    v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    lat = torch.rad2deg(torch.asin(v[..., 2].clamp(-1.0, 1.0)))
    lon = torch.rad2deg(torch.atan2(v[..., 1], v[..., 0]))
    return torch.stack([lat, lon], dim=-1).to(latlon.dtype)


def pairwise_km(latlon: torch.Tensor) -> torch.Tensor:
    """Great-circle distances (B, M, M) in km between the points of each row."""
    xyz = _xyz(latlon)
    cos = (xyz[:, :, None, :] * xyz[:, None, :, :]).sum(-1).clamp(-1.0, 1.0)
    return (torch.acos(cos) * EARTH_RADIUS_KM).float()


def group_modes(
    latlon: torch.Tensor, prob: torch.Tensor, radius_km: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """Mode index per hypothesis (B, M): the position of its leader, -1 for padding.

    Hypotheses must come most probable first (leaders are taken in row order).
    """
    B, M = prob.shape
    d = pairwise_km(latlon)
    link = torch.maximum(LINK_RADII * (radius_km[:, :, None] + radius_km[:, None, :]),
                         torch.full_like(d, MIN_LINK_KM))  # fmt: skip
    near = (d <= link) & valid[:, :, None] & valid[:, None, :]
    mode_of = torch.full((B, M), -1, dtype=torch.long, device=prob.device)
    free = valid.clone()
    for i in range(M):
        lead = free[:, i]
        members = near[:, i, :] & free & lead[:, None]
        mode_of = torch.where(members, torch.full_like(mode_of, i), mode_of)
        free &= ~members
    return mode_of


def mode_answer(
    latlon: torch.Tensor,
    prob: torch.Tensor,
    province: torch.Tensor,
    radius_km: torch.Tensor,
    valid: torch.Tensor,
    num_provinces: int,
) -> dict[str, torch.Tensor]:
    """The heaviest mode's answer. Inputs (B, M[, 2]) sorted most probable first.

    Returns ``latlon`` (B, 2), ``province_id``, ``member`` (B, M bool: the hypotheses averaged),
    ``best`` (B,: row of the most probable member), ``mode_mass`` (B,).
    """
    B, M = prob.shape
    mode_of = group_modes(latlon, prob, radius_km, valid)
    p = torch.where(valid, prob, torch.zeros_like(prob))
    mass = torch.zeros(B, M, dtype=p.dtype, device=p.device)
    mass.scatter_add_(1, mode_of.clamp_min(0), p)
    chosen = mass.argmax(dim=1)  # first maximum: the more probable leader wins ties
    in_mode = mode_of == chosen[:, None]
    pm = torch.zeros(B, num_provinces, dtype=p.dtype, device=p.device)
    pm.scatter_add_(1, province.clamp_min(0), torch.where(in_mode, p, torch.zeros_like(p)))
    prov = pm.argmax(dim=1)
    member = in_mode & (province == prov[:, None])
    w = torch.where(member, p, torch.zeros_like(p))
    # all-zero weights (degenerate probabilities): the first member stands alone
    first = member.float().argmax(dim=1)
    rows = torch.arange(B, device=p.device)
    degenerate = w.sum(dim=1) <= 0
    w[rows[degenerate], first[degenerate]] = 1.0
    return {
        "latlon": spherical_mean(latlon, w),
        "province_id": prov,
        "member": member,
        "best": first,
        "mode_mass": mass[rows, chosen],
    }


class ProvinceShapes:
    """Province polygons for the "answer lies in its province" check (shapely, prepared)."""

    def __init__(self, gdf: Any):
        import shapely

        self.geoms: dict[int, Any] = {}
        for pid, geom in zip(gdf["province_id"], gdf.geometry, strict=True):
            shapely.prepare(geom)
            self.geoms[int(pid)] = geom

    @classmethod
    def load(cls, path: str | Path | None = None, country: str = "PAK") -> ProvinceShapes | None:
        """Polygons of ``country`` (the checkpoint's region table) from ``path`` or
        ``GEOPAK_BOUNDARIES``/the verified cache; None if no local file is there (a prediction
        never waits on a download) or, with a warning, when the environment's file cannot be
        read or is another country's."""
        import os

        from geopak_core import boundaries as gb

        src: str | Path | None = path or os.environ.get("GEOPAK_BOUNDARIES", "").strip() or None
        if src is None:
            try:
                cached = gb.cached_path(gb.country_manifest(country))
                src = cached if cached.is_file() else None
            except Exception:  # no manifest in an installed copy, unwritable cache dir
                src = None
        if src is None:
            return None
        if path:  # asked for by name: a bad file is the user's error
            return cls(gb.read_boundaries(src, country=country))
        try:
            return cls(gb.read_boundaries(src, country=country))
        except Exception as exc:  # the environment's file: the check degrades, never fails
            log.warning("province check off: cannot read boundaries %s (%s)", src, exc)
            return None

    def outside_km(self, lat: np.ndarray, lon: np.ndarray, province_id: np.ndarray) -> np.ndarray:
        """Distance (km, planar estimate at the point's latitude) of each point outside its
        province's polygon; 0 inside. A province without a polygon counts as inside."""
        import shapely

        lat, lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
        out = np.zeros(lat.shape, dtype=np.float64)
        for i, (la, lo, pid) in enumerate(zip(lat, lon, np.asarray(province_id), strict=True)):
            g = self.geoms.get(int(pid))
            if g is None or shapely.contains_xy(g, lo, la):
                continue
            deg = shapely.distance(g, shapely.Point(lo, la))
            out[i] = deg * math.pi * EARTH_RADIUS_KM / 180.0 * max(math.cos(math.radians(la)), 0.05)
        return out

    def inside(
        self,
        lat: np.ndarray,
        lon: np.ndarray,
        province_id: np.ndarray,
        tol_km: float = BORDER_TOLERANCE_KM,
    ) -> np.ndarray:
        return self.outside_km(lat, lon, province_id) <= tol_km


def keep_inside(result: dict[str, torch.Tensor], shapes: ProvinceShapes | None) -> int:
    """Move answers that left their province to the fallbacks (in place); returns how many moved.

    ``result`` needs ``lat``, ``lon``, ``province_id`` and the candidates ``fallback_latlon``
    (B, F, 2), most preferred first (the mode's best hypothesis, its cell centre).
    """
    if shapes is None or "fallback_latlon" not in result:
        return 0
    lat, lon = result["lat"].cpu().numpy(), result["lon"].cpu().numpy()
    pid = result["province_id"].cpu().numpy()
    bad = ~shapes.inside(lat, lon, pid)
    moved = 0
    if not bad.any():
        return 0
    fb = result["fallback_latlon"].cpu().numpy()
    lat, lon = lat.copy(), lon.copy()
    for b in np.flatnonzero(bad):
        cands = fb[b]
        ok = shapes.inside(cands[:, 0], cands[:, 1], np.full(len(cands), pid[b]))
        pick = int(np.argmax(ok)) if ok.any() else len(cands) - 1
        lat[b], lon[b] = cands[pick]
        moved += 1
    dev, dt = result["lat"].device, result["lat"].dtype
    result["lat"] = torch.as_tensor(lat, dtype=dt, device=dev)
    result["lon"] = torch.as_tensor(lon, dtype=dt, device=dev)
    return moved
