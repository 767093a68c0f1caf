"""geopak_data: build a geolocation dataset of Pakistan from public photo sources.

Pipeline stages (one module each): crawl -> filter -> tag -> cluster -> shard -> publish.
Each stage reads and writes inside a work folder and is resumable (see ``runner``).
"""

__version__ = "0.1.0"
