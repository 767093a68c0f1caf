"""The dataset card: a Hub-readable YAML header and the statistics, rules and notes below it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from huggingface_hub import DatasetCard
from support.workfolder import fake_maps, make_work

from geopak_core.errors import GeopakError
from geopak_data.card import markdown_table, size_category, validate_card
from geopak_data.config import load_config
from geopak_data.shard import run_shard


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("card")
    work = make_work(root / "w")
    out = root / "out"
    run_shard(work=work, config=load_config(None, {"shard.max_shard_samples": 30}), out=out)
    return out


def test_size_categories() -> None:
    assert size_category(0) == "n<1K" and size_category(999) == "n<1K"
    assert size_category(1000) == "1K<n<10K" and size_category(250_000) == "100K<n<1M"
    assert size_category(5_000_000) == "1M<n<10M"


def test_markdown_table_escapes_and_aligns() -> None:
    t = markdown_table(["a", "b"], [["x|y", 1234]])
    assert t.splitlines() == ["| a | b |", "| :--- | ---: |", "| x\\|y | 1,234 |"]


def test_yaml_header_is_what_the_hub_reads(folder: Path) -> None:
    card = DatasetCard.load(folder / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "other" and data["license_name"] and data["license_link"]
    assert data["task_categories"] == ["image-classification", "other"]
    assert data["size_categories"] == ["n<1K"]
    assert "geolocation" in data["tags"] and "pakistan" in data["tags"]
    files = data["configs"][0]["data_files"]
    assert files == [
        {"split": "train", "path": "train/*.tar"},
        {"split": "validation", "path": "val/*.tar"},
        {"split": "test", "path": "test/*.tar"},
    ]
    assert validate_card(folder)["configs"] == data["configs"]


def test_body_has_stats_rules_biases_citations_and_removal(folder: Path) -> None:
    text = (folder / "README.md").read_text()
    stats = json.loads((folder / "stats.json").read_text())
    body = text.split("---", 2)[2]
    for heading in (
        "## Splits",
        "## Provinces",
        "## Geocells",
        "## Sources",
        "## How it was built",
        "## Licences",
        "## Known biases",
        "## Removal requests",
        "## Citation",
    ):
        assert heading in body, heading
    # Province table: every province row with its count from stats.json.
    for p in stats["provinces"]:
        assert f"| {p['province_id']} | {p['province']} |" in body
    sindh = next(p for p in stats["provinces"] if p["province"] == "Sindh")
    assert f"| Sindh | PK-SD | {sindh['total']} |" in body
    # Cell table lists every cell.
    cells = pq.read_table(folder / "cells.parquet").to_pandas()
    for cid in cells["cell_id"]:
        assert f"\n| {cid} | " in body
    assert stats["split_rule"] in body and "never straddles" in body
    assert "Sindh-heavy" in body and "Balochistan" in body
    assert "e0231866" in body and "Runfola" in body and "YFCC100M" in body
    assert "indoor: not applied" in body  # the filter's unapplied check is stated, not hidden
    assert "| filter | blur | 3 |" in body
    assert "CC BY-NC 2.0" in body and "attribution" in body
    assert "removal list" in body.lower()


def test_validate_card_rejects_bad_cards(folder: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    (bad / "train").mkdir(parents=True)
    (bad / "train" / "geopak-train-000000.tar").write_bytes(b"")
    (bad / "README.md").write_text("# no header\n")
    with pytest.raises(GeopakError, match="no YAML"):
        validate_card(bad)
    (bad / "README.md").write_text("---\nlicense: [\n---\n")
    with pytest.raises(GeopakError, match="invalid card metadata"):
        validate_card(bad)
    text = (folder / "README.md").read_text()
    (bad / "README.md").write_text(text)  # val/ and test/ globs match nothing here
    with pytest.raises(GeopakError, match="matches no file"):
        validate_card(bad)
    (bad / "README.md").write_text(text.replace("license_name: mixed-creative-commons\n", ""))
    with pytest.raises(GeopakError, match="license_name"):
        validate_card(bad)


def test_map_image_via_shared_plot_map(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict] = []
    work = make_work(tmp_path / "w")
    out = tmp_path / "out"
    with fake_maps(calls):
        run_shard(work=work, config=load_config(None), out=out)
    assert (out / "map.png").is_file() and "](map.png)" in (out / "README.md").read_text()
    assert (
        calls
        and calls[0]["points"] == 83
        and calls[0]["cells"] == 6
        and calls[0]["path"] == out / "map.png"
    )

    monkeypatch.setitem(
        sys.modules, "geopak_data.maps", None
    )  # not importable: no map, card says nothing of it
    out2 = tmp_path / "out2"
    run_shard(work=work, config=load_config(None), out=out2)
    assert not (out2 / "map.png").exists() and "map.png" not in (out2 / "README.md").read_text()


def test_real_plot_map_draws_a_png(tmp_path: Path) -> None:
    """With the shared maps module (when it is present), the map is a real PNG image."""
    import pandas as pd
    from PIL import Image

    from geopak_data import maps
    from geopak_data.shard import write_map

    pts = pd.DataFrame(
        {"lat": [24.86, 31.52, 30.18], "lon": [67.01, 74.36, 66.97], "province_id": [0, 1, 5]}
    )
    cells_df = pd.DataFrame(
        {
            "cell_id": [0, 1],
            "province_id": [0, 1],
            "center_lat": [24.86, 31.52],
            "center_lon": [67.01, 74.36],
            "radius_km": [5.0, 8.0],
        }
    )
    assert maps.plot_map is not None
    name = write_map(tmp_path / "map.png", pts, cells_df, title="t")
    assert name == "map.png"
    with Image.open(tmp_path / "map.png") as im:
        assert im.format == "PNG" and im.size[0] > 100


def test_every_number_about_the_cells_is_measured(folder: Path) -> None:
    """No promise the data does not keep (the old card said "at least 8 photos per cell")."""
    body = (folder / "README.md").read_text().split("---", 2)[2]
    cells = pq.read_table(folder / "cells.parquet").to_pandas()
    stats = json.loads((folder / "stats.json").read_text())
    ns = sorted(int(n) for n in cells["n_samples"])
    minimum = load_config(None).cluster.min_samples_per_cell
    below = sum(n < minimum for n in ns)
    assert "photos per cell)" not in body
    assert (
        f"Cells hold {ns[0]:,} to {ns[-1]:,} photos of this folder (median {ns[len(ns) // 2]:,})"
        in body
    )
    assert f"{below:,} of {len(ns):,} hold fewer than {minimum}" in body
    years = stats["years"]
    assert f"taken {years['first']}-{years['last']}" in body
    assert "2005-2015" not in body  # a claim about YFCC100M in general, not about these photos
    sindh = next(p for p in stats["provinces"] if p["province"] == "Sindh")
    assert f"Sindh holds {100 * sindh['total'] / stats['samples']:.1f}% of the photos" in body


def test_another_country_is_named_not_pakistan(folder: Path, tmp_path: Path) -> None:
    """A card for another country: its name in the tags, its (absent) coast in the tagging
    rule, and a bias line that reads right when the densest region is also the largest."""
    from support import fictional

    from geopak_core.boundaries import load_boundaries, region_table
    from geopak_data.card import biases, card_context, card_metadata
    from geopak_data.country import with_country

    meta = card_metadata(n_samples=5, splits=["train"], pretty_name="x", country="Nepal")
    assert "nepal" in meta["tags"] and "pakistan" not in meta["tags"]
    path = fictional.write_country(tmp_path / "xfa.geojson")
    regions = region_table(load_boundaries(path, country=fictional.COUNTRY))
    areas = dict(zip(regions.names, regions.areas_km2, strict=True))
    big = max(areas, key=areas.__getitem__)
    provinces = [{"province": n, "total": 10 if n == big else 1} for n in regions.names]
    line = biases({"sources": {"yfcc": 12}}, provinces, 12, regions)[0]
    assert f"{big} holds 83.3% of the photos and is also the largest province by area." in line
    assert "western border" not in line and f"while {big}" not in line
    cfg = with_country(load_config(None), fictional.COUNTRY, path)
    stats = json.loads((folder / "stats.json").read_text())
    cells = pq.read_table(folder / "cells.parquet").to_pylist()
    rule = card_context(stats=stats, cells=cells, config=cfg, map_file=None)["border_rule"]
    assert "no tag.coast_bboxes configured" in rule  # Pakistan's coast boxes are not XFA's


def test_map_uses_the_runs_polygons(tmp_path: Path) -> None:
    # region.boundaries (another country's file) draws the shard map, not $GEOPAK_BOUNDARIES
    calls: list[dict] = []
    work = make_work(tmp_path / "w")
    polygons = tmp_path / "mine.geojson"
    cfg = load_config(None, {"region.boundaries": str(polygons)})
    with fake_maps(calls):
        run_shard(work=work, config=cfg, out=tmp_path / "out")
    assert calls and calls[0]["boundaries"] == str(polygons)


def test_compiled_template_renders_what_from_template_renders(folder: Path) -> None:
    """render_card compiles the template once per process; the text is the library's own."""
    import pandas as pd
    from huggingface_hub import DatasetCardData

    from geopak_core.regions import regions_in
    from geopak_data import card as card_mod

    stats = json.loads((folder / "stats.json").read_text())
    cells = pd.read_parquet(folder / "cells.parquet").to_dict("records")
    config = load_config(None, {"shard.max_shard_samples": 30})  # the fixture's
    regions = regions_in(folder)
    ours = card_mod.render_card(stats=stats, cells=cells, config=config, regions=regions)
    assert ours == (folder / "README.md").read_text()
    ctx = card_mod.card_context(
        stats=stats, cells=cells, config=config, map_file="map.png", regions=regions
    )
    splits = [s for s in ("train", "val", "test") if stats["splits"][s]["shards"] > 0]
    meta = card_mod.card_metadata(
        n_samples=ctx["total"], splits=splits, pretty_name=ctx["name"], country=ctx["country_name"]
    )
    theirs = str(
        DatasetCard.from_template(
            DatasetCardData(**meta), template_path=str(card_mod.TEMPLATE), **ctx
        )
    )
    assert ours == (theirs if theirs.endswith("\n") else theirs + "\n")
    assert card_mod.render_card(stats=stats, cells=cells, config=config, regions=regions) == ours
