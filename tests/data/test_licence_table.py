"""One Flickr licence table: the API source and the YFCC100M reader name licences alike."""

from __future__ import annotations

from geopak_data.licenses import FLICKR_FAMILIES, FLICKR_LICENSES
from geopak_data.sources import flickr, yfcc


def test_one_table_shared_by_flickr_and_yfcc() -> None:
    assert flickr.FLICKR_LICENSES is FLICKR_LICENSES
    assert set(FLICKR_FAMILIES) == set(FLICKR_LICENSES)
    for lid in ("1", "2", "3", "4", "5", "6", "7", "9", "10"):
        name = FLICKR_LICENSES[int(lid)][0]
        # a YFCC row with the licence's Flickr name and no URL gets the API's short name
        yfcc_names = [k for k, v in yfcc._FLICKR_LICENSE_IDS.items() if v == lid]
        assert yfcc.map_license(yfcc_names[0]) == (name, lid)
