"""The shard folder contract's names, written out here from ../shared/spec/CONTRACT.md rather
than taken from ``geopak_core.shardfmt``, so a test that checks the code against them checks
it against the contract, not against itself."""

from __future__ import annotations

# cells.parquet (and W/cluster/cells.parquet): the contract's columns, in this order.
CELL_COLUMNS = (
    "cell_id",
    "province_id",
    "province",
    "center_lat",
    "center_lon",
    "radius_km",
    "n_samples",
    "urban",
)

# Every sample's json holds at least these fields.
SAMPLE_JSON = frozenset(
    {
        "key",
        "lat",
        "lon",
        "province",
        "province_id",
        "cell_id",
        "cell_center_lat",
        "cell_center_lon",
        "source",
        "source_id",
        "url",
        "license",
        "owner",
        "date_taken",
        "width",
        "height",
    }
)
