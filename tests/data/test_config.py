"""Typed TOML configuration: defaults, validation errors that name key and value, round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from geopak_core.errors import ConfigError, GeopakError
from geopak_data.config import PipelineConfig, dump_toml, load_config

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("[filter]\nmin_side = -3\n", "filter.min_side", "-3"),
        ("[filter]\nmin_sidee = 3\n", "filter.min_sidee", "3"),
        ("[download]\nconcurrency = 'many'\n", "download.concurrency", "'many'"),
        ("[shard]\ntrain_fraction = 0.9\n", "shard.train_fraction", "0.9"),
        ("[crawl]\nsources = ['instagram']\n", "crawl.sources", "'instagram'"),
        (
            "[crawl.flickr]\ntiles = [[70, 30, 60, 31]]\n",
            "crawl.flickr.tiles[0]",
            "[70, 30, 60, 31]",
        ),
        ("[cluster]\ntarget_cells = {Narnia = 3}\n", "cluster.target_cells", "'Narnia'"),
        ("[tag]\nborder_tolerance_km = true\n", "tag.border_tolerance_km", "True"),
        # an endpoint that is no http(s) URL fails here, not after every retry of a request
        ("[crawl.flickr]\nendpoint = 'api.flickr.com'\n", "crawl.flickr.endpoint", "api.flickr"),
        ("[crawl.places]\nendpoint = 'ftp://x/'\n", "crawl.places.endpoint", "ftp://x/"),
        ("[crawl.commons]\nendpoint = 'http://'\n", "crawl.commons.endpoint", "http://"),
        ("[crawl.mapillary]\nendpoint = 'file:///m'\n", "crawl.mapillary.endpoint", "file:"),
    ],
)
def test_bad_values_name_key_and_value(tmp_path: Path, text: str, key: str, value: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(_write(tmp_path, text))
    assert exc.value.key == key
    assert key in str(exc.value) and value in str(exc.value)


def test_defaults_and_int_to_float(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, "[tag]\nborder_tolerance_km = 3\n"))
    assert cfg.tag.border_tolerance_km == 3.0 and isinstance(cfg.tag.border_tolerance_km, float)
    assert cfg.filter.min_side == 256
    assert cfg.cluster.urban_radius_km == 5.0 and cfg.cluster.rural_radius_km == 50.0


def test_relative_paths_resolve_against_config_folder(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, "[crawl.yfcc]\nmetadata = 'data/meta.tsv'\n"))
    assert cfg.crawl.yfcc.metadata == str((tmp_path / "data" / "meta.tsv").resolve())


def test_dump_round_trip(tmp_path: Path) -> None:
    cfg = load_config(
        _write(
            tmp_path,
            "name = 'rt'\n[cluster]\ntarget_cells = {Sindh = 12}\n[filter]\ncheck_indoor = false\n",
        )
    )
    again = load_config(_write(tmp_path, dump_toml(cfg)))
    assert again == cfg
    assert isinstance(again, PipelineConfig)


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(GeopakError, match="invalid TOML"):
        load_config(_write(tmp_path, "[filter\n"))
    with pytest.raises(GeopakError, match="not found"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize("name", ["pakistan.toml", "demo.toml", "template.toml"])
def test_shipped_pipelines_load(name: str) -> None:
    cfg = load_config(REPO / "pipelines" / name)
    assert cfg.crawl.sources


def test_packaged_demo_config_matches_the_pipeline_file() -> None:
    """Non-editable installs read the packaged copy; it must never drift from pipelines/demo.toml."""
    packaged = REPO / "geopak_data" / "data" / "demo.toml"
    assert packaged.read_text() == (REPO / "pipelines" / "demo.toml").read_text()
