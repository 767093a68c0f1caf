"""Licence names, URLs and the one licence policy every source is filtered by.

Why this exists: sources spell licences differently (Flickr gives an id 0..16, YFCC a name and
a URL, GLDv2 copies the Wikimedia Commons credit line, which may name several licences:
``GFDL(http://www.gnu.org/copyleft/fdl.html)/CC BY-SA 3.0(https://creativecommons.org/...)``).
To filter them by one policy they are reduced to a *family* (``by-sa``, ``cc0``, ``gfdl``, ...)
and the policy is the set of families of the Flickr licence ids in ``crawl.flickr.licenses``
(by default every Creative Commons licence, CC0 and the Public Domain Mark; not "all rights
reserved", not "no known copyright restrictions", not "US Government work").

A file offered under several licences may be used under any one of them, so the most
permissive one (``RANK``: public domain first, then attribution only, then share-alike, ...)
is the one filtered on and reported; all of them are kept in the record.

The Wikimedia Commons source filters by the same families (``is_free``), with the allowed
licences named in its own config section (``crawl.commons.licenses``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# The one Flickr licence table (flickr.photos.licenses.getInfo): id -> (short name, URL).
# Flickr's API and the YFCC100M dump (sources/flickr.py, sources/yfcc.py) both read it.
FLICKR_LICENSES: dict[int, tuple[str, str]] = {
    0: (
        "All Rights Reserved",
        "https://www.flickrhelp.com/hc/en-us/articles/10710266545556-Using-Flickr-images-shared-by-other-members",
    ),
    1: ("CC BY-NC-SA 2.0", "https://creativecommons.org/licenses/by-nc-sa/2.0/"),
    2: ("CC BY-NC 2.0", "https://creativecommons.org/licenses/by-nc/2.0/"),
    3: ("CC BY-NC-ND 2.0", "https://creativecommons.org/licenses/by-nc-nd/2.0/"),
    4: ("CC BY 2.0", "https://creativecommons.org/licenses/by/2.0/"),
    5: ("CC BY-SA 2.0", "https://creativecommons.org/licenses/by-sa/2.0/"),
    6: ("CC BY-ND 2.0", "https://creativecommons.org/licenses/by-nd/2.0/"),
    7: ("No known copyright restrictions", "https://www.flickr.com/commons/usage/"),
    8: ("United States Government Work", "https://www.usa.gov/government-copyright"),
    9: ("CC0 1.0", "https://creativecommons.org/publicdomain/zero/1.0/"),
    10: ("Public Domain Mark 1.0", "https://creativecommons.org/publicdomain/mark/1.0/"),
    11: ("CC BY 4.0", "https://creativecommons.org/licenses/by/4.0/"),
    12: ("CC BY-SA 4.0", "https://creativecommons.org/licenses/by-sa/4.0/"),
    13: ("CC BY-ND 4.0", "https://creativecommons.org/licenses/by-nd/4.0/"),
    14: ("CC BY-NC 4.0", "https://creativecommons.org/licenses/by-nc/4.0/"),
    15: ("CC BY-NC-SA 4.0", "https://creativecommons.org/licenses/by-nc-sa/4.0/"),
    16: ("CC BY-NC-ND 4.0", "https://creativecommons.org/licenses/by-nc-nd/4.0/"),
}

# Flickr licence id -> family (same ids as FLICKR_LICENSES; a test keeps them in step).
FLICKR_FAMILIES: dict[int, str] = {
    0: "arr",
    1: "by-nc-sa",
    2: "by-nc",
    3: "by-nc-nd",
    4: "by",
    5: "by-sa",
    6: "by-nd",
    7: "nkcr",
    8: "usgov",
    9: "cc0",
    10: "pdm",
    11: "by",
    12: "by-sa",
    13: "by-nd",
    14: "by-nc",
    15: "by-nc-sa",
    16: "by-nc-nd",
}
# Most permissive first: fewer conditions on reuse. "other" is any licence not recognised.
RANK: tuple[str, ...] = (
    "cc0",
    "pdm",
    "usgov",
    "nkcr",
    "by",
    "by-sa",
    "gfdl",
    "by-nd",
    "by-nc",
    "by-nc-sa",
    "by-nc-nd",
    "arr",
    "other",
)
_NAMES = {"cc0": "CC0", "pdm": "Public domain", "gfdl": "GFDL"}
_DEFAULT_URLS = {
    "gfdl": "https://www.gnu.org/licenses/fdl-1.3.html",
    "pdm": "https://creativecommons.org/publicdomain/mark/1.0/",
}
_CC_URL = re.compile(
    r"creativecommons\.org/(licenses|publicdomain)/([a-z-]+)(?:/(\d+(?:\.\d+)?))?", re.I
)
_CC_NAME = re.compile(
    r"\b(?:cc|creative\s+commons)[\s_-]*((?:by|attribution)(?:[\s_-]*(?:nc|sa|nd))*)"
    r"(?:[\s_-]*(\d(?:\.\d)?))?",
    re.I,
)


@dataclass(frozen=True)
class Licence:
    """One licence: a short name (``CC BY-SA 3.0``), its URL, family and version."""

    name: str
    url: str
    family: str
    version: str = ""

    @property
    def rank(self) -> int:
        return RANK.index(self.family)


def _family_of_cc(code: str) -> str:
    parts = {p for p in re.split(r"[\s_-]+", code.lower()) if p}
    out = "by"
    for p in ("nc", "sa", "nd"):
        if p in parts:
            out += f"-{p}"
    return out.replace("by-sa-nd", "by-nd")  # not a real licence: treat as the stricter one


def classify(name: str, url: str = "") -> Licence:
    """A licence from a name and/or URL, e.g. ``("CC BY-SA 3.0", "https://.../by-sa/3.0")``."""
    text = " ".join((name or "").split())
    url = (url or "").strip()
    if url.startswith("//"):
        url = "https:" + url
    m = _CC_URL.search(url)
    if m:
        kind, code, version = m.group(1).lower(), m.group(2).lower(), m.group(3) or ""
        if kind == "publicdomain":
            fam = "cc0" if code == "zero" else "pdm"
            label = "CC0" if fam == "cc0" else "Public Domain Mark"
            return Licence(f"{label} {version}".strip(), url, fam, version)
        fam = _family_of_cc(code)
        return Licence(f"CC {fam.upper()} {version}".strip(), url, fam, version)
    low = text.lower()
    m = _CC_NAME.search(text)
    if m and "cc0" not in low:
        fam = _family_of_cc(m.group(1).lower().replace("attribution", "by"))
        version = m.group(2) or ""
        return Licence(
            f"CC {fam.upper()} {version}".strip(), url or _cc_url(fam, version), fam, version
        )
    if re.search(r"\bcc0\b|\bcc[\s-]*zero\b|public\s+domain\s+dedication", low):
        return Licence(
            "CC0 1.0", url or "https://creativecommons.org/publicdomain/zero/1.0/", "cc0", "1.0"
        )
    if re.search(r"\bgfdl\b|gnu free documentation", low):
        return Licence("GFDL", url or _DEFAULT_URLS["gfdl"], "gfdl")
    if re.search(r"public\s*domain|^pd\b|^pd-", low):
        return Licence(_NAMES["pdm"], url, "pdm")
    if "all rights reserved" in low:
        return Licence("All Rights Reserved", url, "arr")
    return Licence(text, url, "other")


def _cc_url(family: str, version: str) -> str:
    return f"https://creativecommons.org/licenses/{family}/{version}/" if version else ""


def parse_credit(text: str) -> list[Licence]:
    """Every licence named in a Commons-style credit string, in order, without repeats.

    ``GFDL(http://www.gnu.org/copyleft/fdl.html)/CC BY-SA 3.0(https://.../by-sa/3.0)`` ->
    ``[GFDL, CC BY-SA 3.0]``. Licences are separated by ``/`` outside parentheses (URLs
    stay whole), or by `` or ``; each may carry its URL in parentheses.
    """
    out: list[Licence] = []
    seen: set[tuple[str, str]] = set()
    for chunk in re.split(r"\s+or\s+|;", text or "", flags=re.I):
        for name, url in _split_licences(chunk):
            if not name and not url:
                continue
            lic = classify(name, url)
            if (lic.family, lic.name) in seen:
                continue
            seen.add((lic.family, lic.name))
            out.append(lic)
    return out


def _split_licences(chunk: str) -> list[tuple[str, str]]:
    """``NAME(URL)/NAME(URL)/NAME`` -> [(name, url), ...]; a ``/`` inside parentheses is no separator."""
    items: list[tuple[str, str]] = []
    name, url, depth, buf = "", "", 0, []
    for ch in chunk + "/":
        if ch == "(":
            if depth == 0:
                name, buf = "".join(buf), []
            else:
                buf.append(ch)
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
            if depth == 0:
                url, buf = "".join(buf), []
            else:
                buf.append(ch)
        elif ch == "/" and depth == 0:
            rest = "".join(buf).strip()
            if not name and not url:
                name = rest
            elif rest:
                name = f"{name} {rest}".strip()
            items.append((" ".join(name.split()), url.strip()))
            name, url, buf = "", "", []
        else:
            buf.append(ch)
    return [(n, u) for n, u in items if n or u]


def most_permissive(licences: Iterable[Licence]) -> Licence | None:
    """The licence with the fewest conditions (newest version on a tie); None when empty."""
    best: Licence | None = None
    for lic in licences:
        if best is None or (lic.rank, _version_key(best)) < (best.rank, _version_key(lic)):
            best = lic
    return best


def _version_key(lic: Licence) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in lic.version.split(".")) if lic.version else (0,)
    except ValueError:
        return (0,)


def policy(flickr_ids: Iterable[int]) -> frozenset[str]:
    """The families allowed by a list of Flickr licence ids (``crawl.flickr.licenses``)."""
    return frozenset(FLICKR_FAMILIES[i] for i in flickr_ids if i in FLICKR_FAMILIES)


def is_free(name: str | None, allowed: Iterable[str]) -> bool:
    """True when ``name`` is positively one of the ``allowed`` licences, compared by family
    (``classify``), so "CC BY-SA 3.0 de" matches a config entry "CC BY-SA" and an
    unrecognised name is never free."""
    fam = classify(name or "").family
    return fam not in ("other", "arr") and fam in {classify(a).family for a in allowed}


__all__ = [
    "FLICKR_FAMILIES",
    "FLICKR_LICENSES",
    "RANK",
    "Licence",
    "classify",
    "is_free",
    "most_permissive",
    "parse_credit",
    "policy",
]
