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
from geopak_core.regions import ISO_CODES, PROVINCES
from geopak_core.shardfmt import SPLITS, shard_name

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
    "geoboundaries": """@article{runfola2020geoboundaries,
  title   = {geoBoundaries: A global database of political administrative boundaries},
  author  = {Runfola, Daniel and Anderson, Austin and Baier, Heather and Crittenden, Matt and Dowker, Elizabeth and Fuhrig, Sydney and Goodman, Seth and Grimsley, Grace and Layko, Rachel and Melville, Graham and Mulder, Maddy and Oberman, Rachel and Panganiban, Joshua and Peck, Andrew and Seitz, Leigh and Shea, Sylvia and Slevin, Hannah and Youngerman, Rebecca and Hobbs, Lauren},
  journal = {PLoS ONE},
  volume  = {15},
  number  = {4},
  pages   = {e0231866},
  year    = {2020},
  doi     = {10.1371/journal.pone.0231866}
}""",
    "yfcc": """@article{thomee2016yfcc100m,
  title   = {{YFCC100M}: The New Data in Multimedia Research},
  author  = {Thomee, Bart and Shamma, David A. and Friedland, Gerald and Elizalde, Benjamin and Ni, Karl and Poland, Douglas and Borth, Damian and Li, Li-Jia},
  journal = {Communications of the ACM},
  volume  = {59},
  number  = {2},
  pages   = {64--73},
  year    = {2016},
  doi     = {10.1145/2812802}
}""",
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
    "places": "Google Places photos (Nearby Search); Google's terms forbid redistribution, so they are excluded unless the builder opted in",
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


def card_metadata(*, n_samples: int, splits: Sequence[str], pretty_name: str) -> dict[str, Any]:
    """The YAML header as a dict: what the Hub reads to list and load the dataset."""
    return {
        "pretty_name": pretty_name,
        "license": "other",
        "license_name": "mixed-creative-commons",
        "license_link": "README.md#licences",
        "task_categories": list(TASK_CATEGORIES),
        "size_categories": [size_category(n_samples)],
        "tags": list(TAGS),
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


def render_card(
    *,
    stats: dict[str, Any],
    cells: list[dict[str, Any]],
    config: PipelineConfig,
    map_file: str | None = "map.png",
) -> str:
    """The full ``README.md`` text for a shard folder described by ``stats`` and ``cells``."""
    from huggingface_hub import DatasetCardData

    name = config.shard.dataset_name or "geopak"
    total = int(stats["samples"])
    splits = [s for s in SPLITS if stats["splits"].get(s, {}).get("shards", 0) > 0]
    meta = card_metadata(n_samples=total, splits=splits, pretty_name=name)
    yaml = DatasetCardData(**meta).to_yaml()
    sources = stats.get("sources", {})
    provinces = stats.get("provinces", [])
    n_cells = len(cells)
    out: list[str] = ["---", yaml, "---", ""]
    add = out.append

    add(f"# {name}: geolocated photos of Pakistan")
    add("")
    add(
        f"{total:,} photos taken in Pakistan, each labelled with its coordinates, its province "
        f"(one of the 7 first-level units) and one of {n_cells:,} geocells, stored as WebDataset shards "
        f"for training image geolocation models. Sources: {', '.join(sorted(sources)) or 'none'}. "
        "Every photo keeps its licence, owner, source URL and attribution."
    )
    add("")
    if map_file:
        add(f"![Samples and geocells over the province boundaries]({map_file})")
        add("")

    add("## Layout")
    add("")
    add("```")
    for s in splits:
        n = stats["splits"][s]["shards"]
        add(f"{shard_name(s, 0)} ... ({n} shard{'s' if n != 1 else ''})")
    add(
        "cells.parquet   one row per geocell (cell_id, province_id, province, center_lat, center_lon, radius_km, n_samples, urban)"
    )
    add(
        "index.parquet   one row per sample: key, split, shard and every field of the sample's json"
    )
    add("stats.json      counts per split, province, cell, source; reject reasons; config hash")
    add("```")
    add("")
    add(
        "Each sample is `{key}.jpg` + `{key}.json`. The json holds `key, lat, lon, province, province_id, cell_id, "
        "cell_center_lat, cell_center_lon, source, source_id, url, license, license_url, owner, title, date_taken, "
        "attribution, width, height, split`. Keys are stable across re-builds and contain no dots or slashes."
    )
    add("")
    add("```python")
    add("import webdataset as wds")
    last = max(0, stats["splits"].get("train", {}).get("shards", 1) - 1)
    add(
        f'ds = wds.WebDataset("train/geopak-train-{{000000..{last:06d}}}.tar").decode("pil").to_tuple("jpg", "json")'
    )
    add("")
    add("from datasets import load_dataset")
    add(
        'ds = load_dataset("webdataset", data_dir="path/to/this/folder")  # splits: train, validation, test'
    )
    add("```")
    add("")

    add("## Splits")
    add("")
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
    add(
        markdown_table(
            ["folder", "Hub split", "samples", "share", "shards", "size"], rows, "llrrrr"
        )
    )
    add("")
    add(stats.get("split_rule", ""))
    add("")
    add(
        "`val` is for model selection; `test` is held out and must never be used to pick a checkpoint."
    )
    add("")

    add("## Provinces")
    add("")
    rows = []
    for p in provinces:
        if p["total"] == 0:
            rows.append(
                [
                    p["province_id"],
                    p["province"],
                    ISO_CODES[p["province_id"]],
                    0,
                    "-",
                    0,
                    0,
                    0,
                    p.get("cells", 0),
                ]
            )
            continue
        rows.append(
            [
                p["province_id"],
                p["province"],
                ISO_CODES[p["province_id"]],
                p["total"],
                _pct(p["total"], total),
                p["train"],
                p["val"],
                p["test"],
                p.get("cells", 0),
            ]
        )
    add(
        markdown_table(
            ["id", "province", "ISO", "samples", "share", "train", "val", "test", "cells"],
            rows,
            "rllrrrrrr",
        )
    )
    add("")

    add("## Geocells")
    add("")
    add(
        f"{n_cells:,} geocells, each inside one province, from HDBSCAN density clustering per province under radius "
        f"limits (urban cells at most {config.cluster.urban_radius_km:g} km, rural cells at most "
        f"{config.cluster.rural_radius_km:g} km from their centre; at least {config.cluster.min_samples_per_cell} photos per cell)."
    )
    add("")
    rows = []
    for pid, pname in enumerate(PROVINCES):
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
    if rows:
        add(
            markdown_table(
                [
                    "province",
                    "cells",
                    "urban",
                    "min samples",
                    "median samples",
                    "max samples",
                    "median radius km",
                    "max radius km",
                ],
                rows,
                "lrrrrrrr",
            )
        )
        add("")
    if cells:
        add("<details><summary>Every cell</summary>")
        add("")
        crow = [
            [
                int(c["cell_id"]),
                c["province"],
                round(float(c["center_lat"]), 4),
                round(float(c["center_lon"]), 4),
                round(float(c["radius_km"]), 2),
                int(c["n_samples"]),
                "yes" if c.get("urban") else "no",
            ]
            for c in sorted(cells, key=lambda c: int(c["cell_id"]))
        ]
        add(
            markdown_table(
                ["cell", "province", "center lat", "center lon", "radius km", "samples", "urban"],
                [
                    [r[0], r[1], f"{r[2]:.4f}", f"{r[3]:.4f}", f"{r[4]:.2f}", r[5], r[6]]
                    for r in crow
                ],
                "rlrrrrl",
            )
        )
        add("")
        add("</details>")
        add("")

    add("## Sources")
    add("")
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
    if rows:
        add(markdown_table(["source", "samples", "share", "train", "val", "test"], rows, "lrrrrr"))
        add("")

    add("## How it was built")
    add("")
    add(
        "Built with [geopak](https://github.com/geopak/geopak) in stages, each resumable and recorded in a manifest:"
    )
    add("")
    add(
        "1. **Crawl**: "
        + ("; ".join(SOURCE_NOTES.get(s, s) for s in sorted(sources)) or "no sources")
        + ". "
        "Downloads respect `noai`/`noimageai` opt-out headers and store images re-encoded as JPEG "
        f"(longest side at most {config.download.max_side} px)."
    )
    f = config.filter
    add(
        "2. **Filter**: files that do not decode fully, shorter side below "
        f"{f.min_side} px or aspect ratio above {f.max_aspect:g}; blur / low detail (variance of the Laplacian below "
        f"{f.min_laplacian_var:g}, entropy below {f.min_entropy:g}); exact duplicates (content hash) and near-duplicates "
        f"(perceptual hash within {f.phash_max_distance} bits); missing, (0, 0), out-of-range coordinates and geotag "
        f"accuracy coarser than level {f.min_accuracy}; indoor scenes (zero-shot CLIP / Places365 when weights are available)."
    )
    for note in stats.get("filter_notes", []):
        add(f"   - {note}")
    from .tagging import border_rule

    t = config.tag
    add(
        "3. **Tag**: each photo gets the province whose polygon contains it (geoBoundaries gbOpen PAK ADM1, public "
        f"domain); {border_rule(t.border_tolerance_km, t.snap_borders, t.coast_bboxes)}."
    )
    add(
        "4. **Geocells**: HDBSCAN per province with radius limits (see above); isolated points that fit no cell are rejected."
    )
    add(
        "5. **Shard**: leakage-free grouped, stratified splits; samples shuffled across each split with a fixed seed; "
        f"shards of at most {config.shard.max_shard_samples:,} samples or {config.shard.max_shard_bytes / 1e9:g} GB."
    )
    add("")
    rejects = stats.get("rejects", {})
    if rejects:
        add("Photos dropped on the way, by stage and reason:")
        add("")
        rows = [
            [stage, reason, n]
            for stage, reasons in rejects.items()
            for reason, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
        ]
        add(markdown_table(["stage", "reason", "photos"], rows, "llr"))
        add("")
    excl = stats.get("excluded", {})
    if excl.get("restricted") or excl.get("removal_list"):
        add(
            f"Excluded at shard time: {excl.get('restricted', 0):,} photos whose source forbids redistribution, "
            f"{excl.get('removal_list', 0):,} on the removal list."
        )
        add("")

    add("## Licences")
    add("")
    add(
        "This dataset is a collection of photos under **different licences**, mostly Creative Commons; the YAML "
        "header therefore says `license: other`. Each photo's licence, licence URL, owner, source URL and "
        "attribution line are in its `{key}.json` and in `index.parquet`, and the licence of each photo governs "
        "its use: *BY* licences require attributing the owner (use the `attribution` field); *NC* licences forbid "
        "commercial use; *ND* licences forbid distributing modified versions; *SA* licences require sharing "
        "adaptations under the same licence. Filter by the `license` field for the subset your use allows. "
        "The tables carry each photo's own metadata under that photo's terms; the province polygons used for "
        "tagging come from geoBoundaries (gbOpen, public domain)."
    )
    add("")
    if stats.get("restricted_included"):
        add(
            f"**This build includes {stats['restricted_included']:,} restricted photos** (e.g. Google Places) whose "
            "terms forbid redistribution: keep it private; `geopak-data publish` refuses it without `--allow-restricted`."
        )
        add("")
    lic = stats.get("licenses", {})
    if lic:
        add(
            markdown_table(
                ["licence", "photos", "share"],
                [
                    [k or "(unknown)", v, _pct(v, total)]
                    for k, v in sorted(lic.items(), key=lambda kv: (-kv[1], kv[0]))
                ],
                "lrr",
            )
        )
        add("")

    add("## Known biases and limitations")
    add("")
    share = {p["province"]: p["total"] / total if total else 0.0 for p in provinces}
    add(
        f"- **Sindh-heavy, sparse Balochistan.** Sindh holds {100 * share.get('Sindh', 0):.1f}% of the photos while "
        f"Balochistan, the largest province by area, holds {100 * share.get('Balochistan', 0):.1f}%. Photos follow "
        "where photographers live and travel: big cities (Karachi, Lahore, Islamabad) and tourist areas dominate; "
        "rural areas, the desert and the western border are thin. Province-balanced sampling or per-province "
        "metrics are recommended."
    )
    add(
        "- **Who takes photos.** Sources are photo-sharing platforms, so the images over-represent landmarks, "
        "tourism, daylight and good weather, and the viewpoints of a small number of very active uploaders."
    )
    add(
        "- **Coordinates.** Locations are the uploader's geotag (GPS or manual placement) and can be off by up to "
        "the accuracy level kept by the filter; landmark photos from GLDv2 carry the landmark's coordinates."
    )
    add(
        "- **Time.** Most photos come from the years the platforms were popular (2005-2015 for YFCC100M)."
    )
    add(
        "- **Automatic filtering.** Blur, duplicate and indoor filters are automatic and imperfect; a few indoor "
        "or unrelated photos remain and some valid ones were dropped."
    )
    add("")

    add("## Removal requests")
    add("")
    add(
        "If you own a photo in this dataset (or appear in one) and want it removed, open a discussion on the "
        "dataset's Community tab (or an issue in the geopak repository) with the photo's `key`, its source URL or "
        "its source id. We add it to the removal list (`shard.removal_list`) and re-run `geopak-data shard`, which "
        "rewrites only the shards that contained it, and publish the new version. Photos removed from their "
        "source (deleted or re-licensed) are removed the same way when reported."
    )
    add("")

    add("## Citation")
    add("")
    add("If you use this dataset, please cite the sources and tools it was built from:")
    add("")
    add("```bibtex")
    keys = ["geoboundaries"]
    if "yfcc" in sources or "flickr" in sources:
        keys.append("yfcc")
    if "gldv2" in sources:
        keys.append("gldv2")
    keys.append("hdbscan")
    add("\n\n".join(CITATIONS[k] for k in keys))
    add("```")
    add("")
    add(
        f"Config hash: `{stats.get('config_hash', '')}` (shard settings `{stats.get('shard_config_hash', '')}`)."
    )
    add("")
    return "\n".join(out)


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


def write_map(path: Path, points: Any, cells: Any, *, title: str = "") -> str | None:
    """DIR/map.png via the shared ``maps.plot_map``; None (and the card says so) when unavailable."""
    try:
        from .maps import plot_map
    except ImportError as exc:
        log.warning("shard: no map image (%s)", exc)
        return None
    try:
        plot_map(path, points=points, cells=cells, title=title)
    except GeopakError as exc:
        log.warning("shard: no map image (%s)", exc)
        return None
    return path.name
