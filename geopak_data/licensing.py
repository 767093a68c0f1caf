"""One licence filter for every source: is a photo's licence one the dataset keeps?

Sources name licences differently (Flickr ids, Commons ``LicenseShortName`` strings such as
"CC BY-SA 4.0", "CC0", "Public domain", "CC BY-SA 3.0 de"; Mapillary one fixed licence).
Comparing raw strings would keep or drop photos by spelling. So a name is reduced to its
*family* ("CC BY-SA 4.0 de" -> "CC BY-SA", "Public domain" -> "PD") and the family is
checked against the configured list. Anything unrecognised is not free: a photo is kept only
when its licence is positively known to allow redistribution.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_CC = re.compile(r"^CC[\s-]*(BY(?:[\s-]+(?:NC|ND|SA))*)\b", re.I)
_CC0 = re.compile(r"^(CC[\s-]*0|CC[\s-]*ZERO|CC0)\b", re.I)
_PD = re.compile(r"^(PD\b|PD-|PUBLIC[\s-]*DOMAIN|PDM\b|NO\s+RESTRICTIONS)", re.I)


def license_family(name: str | None) -> str:
    """The licence family of a short name: "CC BY-SA", "CC BY", "CC0", "PD", or the
    upper-cased name itself when it is none of those (e.g. "GFDL", "ALL RIGHTS RESERVED")."""
    text = " ".join(str(name or "").split())
    if not text:
        return ""
    if _CC0.match(text):
        return "CC0"
    m = _CC.match(text)
    if m:
        parts = re.split(r"[\s-]+", m.group(1).upper())
        return "CC " + "-".join(parts)
    if _PD.match(text):
        return "PD"
    return text.upper()


def is_free(name: str | None, allowed: Iterable[str]) -> bool:
    """True when ``name``'s family is one of the ``allowed`` families (compared as families,
    so the config may say "CC BY-SA" or "cc-by-sa-4.0")."""
    fam = license_family(name)
    return bool(fam) and fam in {license_family(a) for a in allowed}


__all__ = ["is_free", "license_family"]
