"""The shared core under both towers: errors, geometry, regions, atomic io, logging and the
shard-folder format.

``geopak_data`` (the dataset builder) and ``geopak_model`` (training and inference) both
import from here; this package imports neither of them.
"""
