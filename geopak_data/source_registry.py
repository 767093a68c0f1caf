"""Names of the crawl sources and where each is implemented (a leaf module: no imports).

Kept apart from ``geopak_data.sources`` so the config can validate ``crawl.sources`` against
the registry without importing the sources (which import the config).
"""

from __future__ import annotations

# name -> (module, class)
SOURCES: dict[str, tuple[str, str]] = {
    "flickr": ("geopak_data.sources.flickr", "FlickrSource"),
    "places": ("geopak_data.sources.places", "PlacesSource"),
    "yfcc": ("geopak_data.sources.yfcc", "YfccSource"),
    "gldv2": ("geopak_data.sources.gldv2", "Gldv2Source"),
    "commons": ("geopak_data.sources.commons", "CommonsSource"),
    "mapillary": ("geopak_data.sources.mapillary", "MapillarySource"),
}
