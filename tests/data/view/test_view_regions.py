"""The viewer's region polygons for another country's folder: its own file, never a crash."""

from __future__ import annotations

import pytest
from support import fictional

from geopak_core.errors import GeopakError
from geopak_data.config import dump_toml, load_config
from geopak_data.country import work_boundaries
from geopak_data.view.dataset import regions_geojson


def test_default_polygons_of_another_country_do_not_stop_the_viewer(
    tmp_path, box_boundaries, monkeypatch
):
    # $GEOPAK_BOUNDARIES holds Pakistan; the folder is XFA's: no polygons, and the note says why
    monkeypatch.setenv("GEOPAK_BOUNDARIES", str(box_boundaries))
    got = regions_geojson(None, country=fictional.COUNTRY)
    assert got["features"] == [] and "holds PAK" in got["note"]
    # the user's own file of the wrong country stays an error
    with pytest.raises(GeopakError, match="holds PAK"):
        regions_geojson(box_boundaries, country=fictional.COUNTRY)
    xfa = fictional.write_country(tmp_path / "xfa.geojson")
    names = {f["properties"]["name"] for f in regions_geojson(xfa, country="XFA")["features"]}
    assert names == {n for n, _ in fictional.REGIONS}


def test_work_folder_remembers_its_polygons(tmp_path):
    # `tag --boundaries F` is remembered in W/pipeline.toml; the viewer and maps read it back
    work = tmp_path / "w"
    work.mkdir()
    assert work_boundaries(work) is None
    xfa = fictional.write_country(tmp_path / "xfa.geojson")
    cfg = load_config(None, {"region.country": "XFA", "region.boundaries": str(xfa)})
    (work / "pipeline.toml").write_text(dump_toml(cfg))
    assert work_boundaries(work) == str(xfa)
    (work / "pipeline.toml").write_text("not = [toml")
    assert work_boundaries(work) is None  # a damaged config costs only the polygons
