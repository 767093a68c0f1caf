"""Pretrained encoder weights by name: where they come from, where they are kept, what they are.

A model config names its encoders' weights in one of two ways, and a local file wins:

* ``clip_weights`` / ``places_weights``: a file on this machine (nothing is downloaded);
* ``clip_pretrained``: an open_clip pretrained tag for ``clip_model`` (``laion2b_s34b_b88k``,
  ``openai``, ...) or ``hf-hub:ORG/REPO``. The file comes through open_clip's own pretrained
  registry and ``huggingface_hub``, so it lives in the Hugging Face cache (``HF_HOME``) and
  ``HF_ENDPOINT`` / ``HF_HUB_OFFLINE`` mean what the hub library says they mean;
* ``places_weights_url`` (+ ``places_weights_sha256``): the Places365 project's
  ``resnet50_places365.pth.tar``, downloaded once by pooch into ``GEOPAK_CACHE`` (default:
  the platform's user cache folder) under a temporary name, verified, then renamed. A killed
  download leaves only a temporary file, which is never loaded and is removed on the next run.

Nothing here initialises anything randomly: weights that cannot be had raise
``WeightsUnavailable``, one line naming the weights, why, and the two ways out. Every file is
described by a :class:`WeightFile` (path, size, sha256), whose ``provenance`` travels in
checkpoints so a prediction can say which encoders made it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geopak_core.errors import ConfigError, GeopakError

log = logging.getLogger(__name__)

PLACES365_RESNET50_URL = "http://places2.csail.mit.edu/models_places365/resnet50_places365.pth.tar"
# Published alongside that URL by two independent projects that verify it on download.
PLACES365_RESNET50_SHA256 = "46529c86902bd0cfb0ea562a30b2850c28d2620d96282b3db9c318e1d774f6c5"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_DIGEST_SUFFIX = ".sha256"


class WeightsUnavailable(GeopakError):
    """Pretrained weights a config names cannot be had (offline, not cached, bad digest)."""


@dataclass(frozen=True)
class WeightFile:
    """One encoder weight file on disk and where it came from."""

    encoder: str  # "clip" or "places"
    source: str  # "open_clip ViT-B-16 laion2b_s34b_b88k", "file", a URL
    path: Path
    size: int
    sha256: str
    origin: str = ""  # hub repo@commit/filename, or the URL

    def provenance(self) -> dict[str, Any]:
        """Plain data for checkpoints and ``-v`` output."""
        return {
            "source": self.source,
            "origin": self.origin,
            "file": self.path.name,
            "size": int(self.size),
            "sha256": self.sha256,
        }


def random_provenance(reason: str) -> dict[str, Any]:
    """Provenance record of an encoder left randomly initialised, saying why, so checkpoints
    and reports never pass random weights off as pretrained."""
    return {"source": "random", "reason": reason}


# ----------------------------------------------------------------------------- places


def cache_root() -> Path:
    """GEOPAK_CACHE, else the platform's user cache folder for geopak."""
    env = os.environ.get("GEOPAK_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("geopak", appauthor=False))


def offline() -> bool:
    """Offline as the hub library defines it (HF_HUB_OFFLINE), or GEOPAK_OFFLINE=1."""
    from huggingface_hub import constants

    return bool(constants.is_offline_mode()) or os.environ.get("GEOPAK_OFFLINE", "") in (
        "1",
        "true",
        "yes",
    )


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a weights file, read in chunks (Places365 weights are hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _ways_out(what: str, key: str) -> str:
    return f"run `geopak-train weights` with this config where there is network, or set {key} to a local {what} file"


def _places_target(url: str) -> Path:
    name = url.rstrip("/").rsplit("/", 1)[-1] or "places365.pth.tar"
    return cache_root() / "weights" / name


def _check_cached(target: Path, pinned: str, label: str) -> str | None:
    """Digest of a cached file that passes its check; None (and the file removed) if not."""
    digest = sha256_file(target)
    recorded = target.with_name(target.name + _DIGEST_SUFFIX)
    expected = pinned or (recorded.read_text().strip() if recorded.is_file() else "")
    if expected and digest != expected:
        log.warning(
            "%s: cached %s has sha256 %s, expected %s: removed", label, target, digest, expected
        )
        target.unlink(missing_ok=True)
        return None
    return digest


def _download_places(url: str, target: Path, pinned: str, label: str) -> str:
    import pooch
    import requests
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / ".download.lock")):
        if target.is_file():  # another process finished it while we waited
            digest = _check_cached(target, pinned, label)
            if digest is not None:
                return digest
        for stale in target.parent.glob("tmp*"):  # a killed download's remains: never loaded
            stale.unlink(missing_ok=True)
        log.info("downloading %s from %s into %s", label, url, target.parent)
        try:
            pooch.retrieve(
                url,
                known_hash=f"sha256:{pinned}" if pinned else None,
                fname=target.name,
                path=target.parent,
                # a short connect timeout: an unreachable host fails in seconds, not a minute
                downloader=pooch.HTTPDownloader(timeout=(10, 60), progressbar=False),
            )
        except ValueError as exc:  # pooch's hash mismatch; its temporary file is gone
            got = re.search(r"\b([0-9a-f]{64})\b(?![\s\S]*\b[0-9a-f]{64}\b)", str(exc))
            raise WeightsUnavailable(
                f"{label}: digest mismatch: {url} gave sha256 {got.group(1) if got else '?'}, "
                f"expected {pinned}; refused (nothing kept in the cache)"
            ) from None
        except (requests.RequestException, OSError) as exc:
            first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise WeightsUnavailable(
                f"{label}: download from {url} failed ({first}); {_ways_out('Places365', 'places_weights')}"
            ) from None
    digest = sha256_file(target)
    if pinned and digest != pinned:  # pooch checked it; a second look costs a second
        target.unlink(missing_ok=True)
        raise WeightsUnavailable(f"{label}: digest mismatch after download; refused")
    if not pinned:
        from geopak_core.io import atomic_write_text

        atomic_write_text(target.with_name(target.name + _DIGEST_SUFFIX), digest + "\n")
        log.warning(
            "%s: no places_weights_sha256 pinned; recorded the first download's sha256 %s",
            label,
            digest,
        )
    return digest


def fetch_places(config: Any) -> WeightFile:
    """The Places365 checkpoint the config names by URL: cached, or downloaded once."""
    url = str(config.places_weights_url)
    pinned = str(config.places_weights_sha256 or "").lower()
    if pinned and not _SHA256.match(pinned):
        raise ConfigError("places_weights_sha256", pinned, "must be 64 hex digits (sha256)")
    target = _places_target(url)
    label = f"Places365 weights ({target.name})"
    digest = _check_cached(target, pinned, label) if target.is_file() else None
    if digest is None:
        if offline():
            raise WeightsUnavailable(
                f"{label}: not cached in {target.parent} and offline "
                f"(HF_HUB_OFFLINE/GEOPAK_OFFLINE); {_ways_out('Places365', 'places_weights')}"
            )
        digest = _download_places(url, target, pinned, label)
    return WeightFile("places", "url", target, target.stat().st_size, digest, url)


# ----------------------------------------------------------------------------- clip


def clip_pretrained_cfg(config: Any) -> dict[str, Any]:
    """open_clip's registry entry for (clip_model, clip_pretrained); {} for hf-hub: names."""
    import open_clip

    tag = str(config.clip_pretrained)
    if not tag or tag.startswith("hf-hub:"):
        return {}
    cfg = open_clip.get_pretrained_cfg(config.clip_model, tag)
    if not cfg:
        known = open_clip.list_pretrained_tags_by_model(config.clip_model)
        raise ConfigError(
            "clip_pretrained",
            tag,
            f"not an open_clip pretrained tag of {config.clip_model} (known: "
            f"{', '.join(known) or 'none'}; or hf-hub:ORG/REPO)",
        )
    return dict(cfg)


def clip_needs_quickgelu(config: Any) -> bool:
    """OpenAI's weights were trained with QuickGELU: open_clip lists them under both the plain
    and the ``-quickgelu`` architecture but only the latter computes what they expect, so the
    tower is built with QuickGELU whenever the chosen tag says it was trained with it."""
    return bool(clip_pretrained_cfg(config).get("quick_gelu", False))


def _hub_origin(path: Path) -> str:
    """``ORG/REPO@COMMIT/FILE`` from a hub cache path (models--ORG--REPO/snapshots/COMMIT/FILE)."""
    parts = path.parts
    for i, part in enumerate(parts):
        if part.startswith("models--") and i + 2 < len(parts) and parts[i + 1] == "snapshots":
            repo = part[len("models--") :].replace("--", "/")
            return f"{repo}@{parts[i + 2]}/{'/'.join(parts[i + 3 :])}"
    return str(path)


def _verify_hub_blob(path: Path, label: str) -> str:
    """sha256 of a hub file; an LFS blob is named by its sha256, so a mismatch is corruption
    (the blob and its snapshot link are removed, so a rerun downloads it again)."""
    blob = path.resolve()
    digest = sha256_file(blob)
    if _SHA256.match(blob.name) and digest != blob.name:
        blob.unlink(missing_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink(missing_ok=True)
        raise WeightsUnavailable(
            f"{label}: digest mismatch: the downloaded file has sha256 {digest}, the hub said "
            f"{blob.name}; refused and removed from the cache"
        )
    return digest


def _hub_download(config: Any) -> tuple[str, str]:
    """(path, source) through open_clip's registry (hf-hub:ORG/REPO also accepted)."""
    import open_clip

    tag = str(config.clip_pretrained)
    if tag.startswith("hf-hub:"):
        repo = tag[len("hf-hub:") :].strip("/")
        return open_clip.pretrained.download_pretrained_from_hf(repo), f"open_clip {tag}"
    cfg = clip_pretrained_cfg(config)
    path = open_clip.pretrained.download_pretrained(cfg)
    if not path:
        raise WeightsUnavailable(
            f"open_clip has no download for {config.clip_model} {tag}; set clip_weights to a local file"
        )
    return path, f"open_clip {config.clip_model} {tag}"


def hub_unreachable() -> str:
    """Why the Hub (``HF_ENDPOINT``) cannot be reached, or '' when it answers at all.

    One request (``HEAD`` of the endpoint's root, any HTTP status counts as reachable) with
    the hub library's own metadata timeout (``HF_HUB_ETAG_TIMEOUT``, default 10 s), through its
    own client (so proxies and certificates are the ones a download would use). Why: without
    a network the hub library retries a failed metadata call five times with back-off and a
    60 s timeout, for every candidate file name, which made a missing network cost a minute
    before its one-line error."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(
            constants.ENDPOINT.rstrip("/") + "/", timeout=float(constants.HF_HUB_ETAG_TIMEOUT)
        )
    except Exception as exc:  # connection refused, DNS, timeout, TLS: a download fails too
        return (str(exc).splitlines() or [type(exc).__name__])[0][:200] or type(exc).__name__
    return ""


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """The hub library in offline mode for one call (what ``HF_HUB_OFFLINE=1`` does: cached
    files are served, nothing is asked of the network)."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def fetch_clip(config: Any) -> WeightFile:
    """The open_clip checkpoint named by ``clip_pretrained``, from the HF cache or the hub.

    A Hub that cannot be reached is found with one request (``hub_unreachable``); the file is
    then taken from the cache as under ``HF_HUB_OFFLINE``, or the command stops with one line
    at once instead of after the hub library's retries."""
    from huggingface_hub import constants

    label = f"CLIP weights ({config.clip_model} {config.clip_pretrained})"
    down = "" if constants.is_offline_mode() else hub_unreachable()
    try:
        with _hub_offline() if down else contextlib.nullcontext():
            path, source = _hub_download(config)
    except (FileNotFoundError, RuntimeError, OSError) as exc:
        if down:
            why = (
                f"the Hub at {constants.ENDPOINT} cannot be reached ({down}) and the file is not "
                f"in the Hugging Face cache ({constants.HF_HUB_CACHE})"
            )
        elif constants.is_offline_mode():
            why = f"not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is set"
        else:
            last = str(exc).split("Last error:")[-1].strip().splitlines()
            why = f"download from {constants.ENDPOINT} failed ({(last[0] if last else type(exc).__name__)[:200]})"
        raise WeightsUnavailable(
            f"{label}: {why}; {_ways_out('open_clip', 'clip_weights')}"
        ) from None
    p = Path(path)
    digest = _verify_hub_blob(p, label)
    _drop_stale_partials(p.resolve())
    return WeightFile("clip", source, p, p.stat().st_size, digest, _hub_origin(p))


def _drop_stale_partials(blob: Path, stale_s: float = 600.0) -> None:
    """A killed hub download leaves ``<blob>.<id>.incomplete`` behind (the hub library
    restarts into a new, process-unique file rather than resuming a shared one). Once the
    blob is complete such leftovers are useless; only ones untouched for ``stale_s`` are
    removed, so a concurrent download of the same file (which writes every 10 MiB) is left
    alone."""
    import time

    now = time.time()
    for part in blob.parent.glob(f"{blob.name}*.incomplete"):
        try:
            if now - part.stat().st_mtime > stale_s:
                part.unlink()
        except OSError:  # gone already, or not ours to remove
            pass


# ----------------------------------------------------------------------------- both


def local_file(encoder: str, path: str | Path) -> WeightFile:
    """A user-supplied weights file as a WeightFile; a missing path is a one-line error."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise GeopakError(f"{encoder}_weights file not found: {p}")
    return WeightFile(encoder, "file", p, p.stat().st_size, sha256_file(p), str(p.resolve()))


def named(config: Any, encoder: str) -> bool:
    """Whether the config names weights for ``encoder`` (a local file or a pretrained source)."""
    if encoder == "clip":
        return bool(config.clip_weights or config.clip_pretrained)
    return bool(config.places_weights or config.places_weights_url)


def resolve(config: Any, encoder: str) -> WeightFile:
    """The weight file for one encoder: the local file if set, else the named pretrained one."""
    if encoder == "clip":
        if config.clip_weights:
            return local_file("clip", config.clip_weights)
        return fetch_clip(config)
    if config.places_weights:
        return local_file("places", config.places_weights)
    return fetch_places(config)


def fetch_all(config: Any) -> list[WeightFile]:
    """Every weight file the config names (downloading what is missing), in encoder order."""
    return [resolve(config, enc) for enc in ("clip", "places") if named(config, enc)]


def describe(provenance: dict[str, Any]) -> str:
    """One line for ``-v`` output: where each encoder's weights came from."""
    parts = []
    for enc in ("clip", "places"):
        p = provenance.get(enc)
        if not p:
            parts.append(f"{enc}: unrecorded (checkpoint made before provenance was kept)")
        elif p.get("source") == "random":
            parts.append(f"{enc}: random ({p.get('reason', '')})")
        else:
            parts.append(
                f"{enc}: {p.get('source')} {p.get('origin') or p.get('file')} (sha256 {p.get('sha256')})"
            )
    return "; ".join(parts)
