"""The source registry: which crawl sources exist and what each one needs (a leaf module).

``SOURCES`` describes every source (module and class, whether its terms forbid
redistribution, what it crawls, the environment variables and local files it needs, an
example). The config's validation, ``crawl``'s sub-commands and help, ``run``'s pre-flight
check and ``Source.restricted`` all read it, so adding a source is one entry here plus its
module. It imports nothing else of geopak, so the config can validate ``crawl.sources``
against it without an import cycle.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geopak_core.errors import not_a_file


@dataclass(frozen=True)
class FileInput:
    """A local file a source reads: its option name, CLI flag, config key and what it is."""

    opt: str  # keyword for get_source / attribute of the crawl args (e.g. "train_csv")
    what: str  # e.g. "yfcc100m_dataset TSV (plain/.gz/.bz2) or Parquet"
    required: bool = True
    # (other option, file name): when unset, this file name beside the other option's file
    beside: tuple[str, str] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.opt.replace("_", "-")


@dataclass(frozen=True)
class SourceSpec:
    """Everything about a source that is known without importing it."""

    name: str
    module: str
    cls: str
    restricted: bool  # its terms forbid redistributing the photo bytes
    summary: str  # one line: what it crawls
    env: tuple[str, ...] = ()  # environment variables it needs (never stored)
    env_hint: str = ""  # where to get them
    files: tuple[FileInput, ...] = ()
    example: str = ""
    notes: str = ""
    remote: bool = False  # takes --endpoint
    tiled: bool = False  # `run` crawls it after a planning round, steered by that plan
    plan: bool = False  # takes --plan (a coverage plan) on `crawl`

    def config_key(self, f: FileInput) -> str:
        return f"crawl.{self.name}.{f.opt}"


SOURCES: dict[str, SourceSpec] = {
    s.name: s
    for s in (
        SourceSpec(
            name="flickr",
            module="geopak_data.sources.flickr",
            cls="FlickrSource",
            restricted=False,
            summary="geotagged, openly licensed Flickr photos (flickr.photos.search over bbox tiles x date windows)",
            env=("FLICKR_API_KEY", "FLICKR_API_SECRET"),
            env_hint="create a key at https://www.flickr.com/services/apps/create/",
            example=(
                "FLICKR_API_KEY=... FLICKR_API_SECRET=... geopak-data crawl flickr --work W "
                "--config pipelines/pakistan.toml"
            ),
            notes=(
                "Settings: [crawl.flickr] tiles, min_date, window_days, licenses, per_page, "
                "result_cap, calls_per_hour. "
                "Queries over the ~4,000-result cap are split by area, then by time. "
                "With --plan, only tiles over under-covered planner tiles, most under-covered first."
            ),
            remote=True,
            tiled=True,
            plan=True,
        ),
        SourceSpec(
            name="places",
            module="geopak_data.sources.places",
            cls="PlacesSource",
            restricted=True,
            summary="Google Places photos around anchor points (Places API (New) or legacy Nearby Search grid)",
            env=("GOOGLE_MAPS_API_KEY",),
            env_hint="create a key with the Places API enabled at https://console.cloud.google.com/google/maps-apis",
            example="GOOGLE_MAPS_API_KEY=... geopak-data crawl places --work W --config pipelines/pakistan.toml",
            notes="Settings: [crawl.places] api, anchors, radius_m, grid_step_km, grid_size, max_photos_per_place. "
            "With --plan, searches go to the plan's tiles below target instead of the anchor grid "
            "(grid_step_km apart, most populated points first, until the tile's deficit is found "
            "or two points in a row find nothing), most under-covered tile first; `run` keeps the anchors. "
            "Photos are marked restricted (Google's terms): excluded from shards unless shard.include_restricted.",
            remote=True,
            plan=True,
        ),
        SourceSpec(
            name="yfcc",
            module="geopak_data.sources.yfcc",
            cls="YfccSource",
            restricted=False,
            summary="geotagged photos of the YFCC100M metadata file inside crawl.bbox (streamed, constant memory)",
            files=(FileInput("metadata", "yfcc100m_dataset TSV (plain/.gz/.bz2) or Parquet"),),
            example="geopak-data crawl yfcc --work W --metadata yfcc100m_dataset.bz2",
            notes="Settings: [crawl.yfcc] metadata, chunk_bytes.",
        ),
        SourceSpec(
            name="gldv2",
            module="geopak_data.sources.gldv2",
            cls="Gldv2Source",
            restricted=False,
            summary="Google Landmarks v2 photos whose landmark lies inside crawl.bbox",
            files=(
                FileInput("train_csv", "GLDv2 train.csv (id,url,landmark_id)"),
                FileInput("landmarks", "landmark table (landmark_id,lat,lon[,name])"),
                FileInput(
                    "attribution_csv",
                    "train_attribution.csv (id,url,author,license,title): the only source of each image's "
                    "licence (else the one beside train.csv)",
                    beside=("train_csv", "train_attribution.csv"),
                ),
            ),
            example=(
                "geopak-data crawl gldv2 --work W --train-csv train.csv --landmarks "
                "landmarks.csv --attribution-csv train_attribution.csv"
            ),
            notes="Settings: [crawl.gldv2] train_csv, landmarks, attribution_csv.",
        ),
        SourceSpec(
            name="commons",
            module="geopak_data.sources.commons",
            cls="CommonsSource",
            restricted=False,
            summary="freely licensed, geotagged Wikimedia Commons photos (GeoData geosearch over tiles)",
            example="geopak-data crawl commons --work W --config pipelines/pakistan.toml",
            notes="Settings: [crawl.commons]. No key is needed; one request at a time with maxlag, "
            "as the MediaWiki API etiquette asks.",
            remote=True,
            tiled=True,
            plan=True,
        ),
        SourceSpec(
            name="mapillary",
            module="geopak_data.sources.mapillary",
            cls="MapillarySource",
            restricted=False,
            summary="Mapillary street-level images (CC BY-SA) over tiles (Graph API image search)",
            env=("MAPILLARY_ACCESS_TOKEN",),
            env_hint="get a client token at https://www.mapillary.com/dashboard/developers",
            example="MAPILLARY_ACCESS_TOKEN=... geopak-data crawl mapillary --work W --config pipelines/pakistan.toml",
            notes="Settings: [crawl.mapillary].",
            remote=True,
            tiled=True,
            plan=True,
        ),
    )
}


def source_names() -> tuple[str, ...]:
    """Every known source, in registry order."""
    return tuple(SOURCES)


def restricted_sources() -> tuple[str, ...]:
    """Sources whose terms forbid redistributing photo bytes."""
    return tuple(n for n, s in SOURCES.items() if s.restricted)


def _value(f: FileInput, opts: dict[str, Any], section: Any) -> str:
    """The file an option names: the flag, the config key, else the file ``f.beside`` names."""
    value = opts.get(f.opt) or (getattr(section, f.opt, "") if section is not None else "")
    if not value and f.beside is not None:
        other, name = f.beside
        base = opts.get(other) or (getattr(section, other, "") if section is not None else "")
        if base and (Path(base).parent / name).is_file():
            return str(Path(base).parent / name)
    return str(value or "")


def missing_inputs(
    name: str, config: Any, opts: dict[str, Any] | None = None, *, command: str = "crawl"
) -> list[str]:
    """What ``name`` lacks to run (unset environment variables, unset or absent local files),
    each with how to give it in ``command`` (``crawl`` flags or ``run``'s ``--set``). Cheap:
    no import of the source, no network, nothing written, so it runs before any work."""
    spec = SOURCES[name]
    opts = opts or {}
    out: list[str] = []
    unset = [v for v in spec.env if not os.environ.get(v, "").strip()]
    if unset:
        out.append(
            f"{' and '.join(unset)} {'is' if len(unset) == 1 else 'are'} not set"
            + (f" ({spec.env_hint}, then export {' '.join(unset)})" if spec.env_hint else "")
        )
    section = getattr(config.crawl, name, None)
    for f in spec.files:
        value = _value(f, opts, section)
        how = (
            f"--set {spec.config_key(f)}=FILE"
            if command == "run"
            else f"{f.flag} FILE or set {spec.config_key(f)}"
        )
        if not value:
            if f.required:
                out.append(f"no {f.what} ({how})")
        elif not Path(value).is_file():
            out.append(f"{not_a_file(value, f.opt + ' file')} ({how})")
    return out
