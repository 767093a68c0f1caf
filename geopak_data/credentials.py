"""Credentials for metadata URLs, from the environment (``GEOPAK_URL_CREDENTIALS``).

Why: a metadata file (YFCC100M, GLDv2, a mirror's list) may hold URLs with credentials
(``https://user:pass@mirror/x.jpg?api_key=K``). They are never stored: records keep the URL
without them (``records.strip_credentials``) and the discovering process keeps the original
in memory for its own downloads. A crawl resumed (or ``--retry-failed``) in a new process
has only the stored URL, so without this it would fetch the stripped URL and be refused.

``GEOPAK_URL_CREDENTIALS`` holds one or more URLs (separated by white space), each naming an
origin (scheme, host, port) and the credentials for it: its ``user:pass@`` and its
credential query parameters (the names of ``records.SECRET_PARAMS``; other parts of the URL
are ignored), e.g. ``https://alice:s3cret@mirror.example.org/?api_key=K``. A stored URL of
that origin gets the ones it lacks back, at fetch time only; redirects carry them only to
the same origin (the downloader's rule), and nothing of them is ever logged or written.
"""

from __future__ import annotations

import functools
import os
from urllib.parse import unquote, urlsplit, urlunsplit

from geopak_core.errors import GeopakError

from .records import SECRET_PARAMS

ENV_CREDENTIALS = "GEOPAK_URL_CREDENTIALS"


def _param_name(pair: str) -> str:
    return unquote(pair.split("=", 1)[0]).lower()


def _merge(url: str, entry: str) -> str:
    """``url`` with ``entry``'s userinfo (when ``url`` has none) and the credential query
    parameters ``url`` lacks, appended in ``entry``'s order."""
    u, e = urlsplit(url), urlsplit(entry)
    netloc = u.netloc
    if "@" in e.netloc and "@" not in u.netloc:
        netloc = f"{e.netloc.rsplit('@', 1)[0]}@{u.netloc}"
    have = {_param_name(p) for p in u.query.split("&") if p}
    extra = [
        p
        for p in e.query.split("&")
        if p and SECRET_PARAMS.match(_param_name(p)) and _param_name(p) not in have
    ]
    query = "&".join(q for q in (u.query, *extra) if q)
    return urlunsplit((u.scheme, netloc, u.path, query, u.fragment))


@functools.lru_cache(maxsize=4)
def _entries(value: str) -> tuple[tuple[tuple[str, str, int | None], str], ...]:
    """(origin, entry) of every entry, all checked: an entry that is not a URL is a one-line
    error naming its position (never its text: it holds a secret)."""
    from .download import url_origin

    out = []
    for i, entry in enumerate(value.split(), 1):
        try:
            origin = url_origin(entry) if "://" in entry else None
        except ValueError:
            origin = None
        if origin is None or not origin[1]:
            raise GeopakError(
                f"{ENV_CREDENTIALS}: entry {i} is not a URL "
                "(scheme://[user:pass@]host[:port]/[?param=value], separated by spaces)"
            )
        out.append((origin, entry))
    return tuple(out)


def with_env_credentials(url: str, value: str | None = None) -> str:
    """``url`` with the credentials ``GEOPAK_URL_CREDENTIALS`` (or ``value``) holds for its
    origin (the first entry of that origin); unchanged when none is set for it."""
    value = os.environ.get(ENV_CREDENTIALS, "") if value is None else value
    if not url or not value.strip():
        return url
    from .download import url_origin

    entries = _entries(value)
    try:
        origin = url_origin(url)
    except ValueError:
        return url  # the download rejects it (bad_url)
    return next((_merge(url, e) for o, e in entries if o == origin), url)


__all__ = ["ENV_CREDENTIALS", "with_env_credentials"]
