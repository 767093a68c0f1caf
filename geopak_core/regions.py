"""The seven first-level units of Pakistan with the contract's fixed ids.

The ids are part of the shard format and of every checkpoint, so they never change.
"""

from __future__ import annotations

import re

PROVINCES: tuple[str, ...] = (
    "Sindh",
    "Punjab",
    "Khyber Pakhtunkhwa",
    "Islamabad Capital Territory",
    "Gilgit-Baltistan",
    "Balochistan",
    "Azad Kashmir",
)
ISO_CODES: tuple[str, ...] = ("PK-SD", "PK-PB", "PK-KP", "PK-IS", "PK-GB", "PK-BA", "PK-JK")
NUM_PROVINCES = len(PROVINCES)

_ALIASES = {
    "sindh": 0,
    "punjab": 1,
    "khyberpakhtunkhwa": 2,
    "kpk": 2,
    "kp": 2,
    "nwfp": 2,
    "northwestfrontierprovince": 2,
    "federallyadministeredtribalareas": 2,
    "fata": 2,
    "islamabadcapitalterritory": 3,
    "islamabad": 3,
    "ict": 3,
    "federalcapitalterritory": 3,
    "gilgitbaltistan": 4,
    "northernareas": 4,
    "balochistan": 5,
    "baluchistan": 5,
    "azadkashmir": 6,
    "azadjammuandkashmir": 6,
    "azadjammukashmir": 6,
    "ajk": 6,
}


def _norm(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())


def province_id(name_or_iso: str) -> int:
    """Map a province name (any common spelling) or ISO 3166-2 code to its contract id.

    Raises KeyError with the offending name when it is not one of the seven units.
    """
    text = str(name_or_iso).strip()
    if text.upper() in ISO_CODES:
        return ISO_CODES.index(text.upper())
    key = _norm(text)
    if key in _ALIASES:
        return _ALIASES[key]
    raise KeyError(f"unknown province name {name_or_iso!r}")


def province_name(pid: int) -> str:
    return PROVINCES[int(pid)]
