"""``geopak-data publish DIR --repo-id ORG/NAME [--dry-run]``: the shard folder to the Hub.

Before anything leaves the machine the folder is checked the way a user would find it: the
card parses as the Hub parses it and its ``data_files`` match real shards, every shard that
``index.parquet`` names exists, and no restricted photo (Google Places: its terms forbid
redistribution) is included unless ``--allow-restricted`` says the publisher has the rights,
and a synthetic dataset (the demo's generated photos, marked ``synthetic`` in ``stats.json``
and every sample) is not published unless ``--allow-synthetic`` says that is the intent.
``--dry-run`` stops there and lists what would be uploaded, with sizes.

The upload is ``huggingface_hub``'s resumable large-folder upload (``upload_large_folder``;
in huggingface_hub 2.x ``upload_folder`` itself is streamed, multi-commit and resumable):
run the same command again after an interruption and it continues. The token comes from
``HF_TOKEN`` or the library's own login store and is never printed or logged.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geopak_core.errors import GeopakError
from geopak_core.io import read_json
from geopak_core.progress import log
from geopak_core.shardfmt import (
    REQUIRED_FILES,
    SYNTHETIC_FIELD,
    read_table,
    require_columns,
    require_sound,
)

from .card import validate_card

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
IGNORE_PATTERNS = [".*", "**/.*", "**/__pycache__/**"]


@dataclass
class PublishPlan:
    """What would be uploaded: relative paths and sizes, plus the card's metadata."""

    folder: Path
    files: list[tuple[str, int]]
    card: dict[str, Any]
    samples: int
    restricted: int

    @property
    def total_bytes(self) -> int:
        return sum(s for _, s in self.files)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000.0
    return str(n)


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") or part == "__pycache__" for part in rel.parts)


def refuse_links(folder: Path) -> None:
    """Refuse a symbolic link anywhere in the folder (hidden ones too) whose target lies
    outside it: the uploader follows links, so a planted link to a token file or a home
    folder would be published. Links are never followed while looking (os.walk default)."""
    import os

    root = folder.resolve()
    for dirpath, dirs, files in os.walk(folder):
        for name in (*dirs, *files):
            p = Path(dirpath) / name
            if not p.is_symlink():
                continue
            target = p.resolve()
            if target != root and root not in target.parents:
                raise GeopakError(
                    f"publish: {p} is a symbolic link to {os.readlink(p)}, outside the shard "
                    f"folder; remove it (only files inside {folder} are published)"
                )


CREDENTIAL_FIELDS = ("url", "license_url", "attribution", "title")


def refuse_credentials(folder: Path, index: Any) -> None:
    """Refuse a folder whose samples carry credentials in a URL (``user:pass@``, ``api_key=``,
    ``token=``...: ``records.strip_credentials`` would change it). Shard folders written before
    geopak stripped them at discovery can hold them in every sample's json; ``index.parquet``
    holds the same fields from the same build, so it is what is read (no tar is opened). The
    message names the sample and the field, never the value."""
    from .records import without_credentials

    fields = [f for f in CREDENTIAL_FIELDS if f in index.columns]
    text = index[fields].fillna("").astype(str)
    # only a value with "@" or "=" can hold credentials (strip_credentials' own shortcut)
    maybe = text.apply(lambda col: col.str.contains("[@=]", regex=True)).any(axis=1).to_numpy()
    bad: list[tuple[str, str]] = []
    for key, row in zip(
        index["key"][maybe].astype(str), text[maybe].to_dict("records"), strict=True
    ):
        clean = without_credentials(row)[0]
        if clean != row:
            bad.append((key, next(f for f in fields if clean[f] != row[f])))
    if bad:
        key, field = bad[0]
        more = f" (and {len(bad) - 1} more sample(s))" if len(bad) > 1 else ""
        raise GeopakError(
            f"publish: sample {key} has credentials in its {field} (a user:pass@ or a key/token "
            f"parameter, stored before geopak stripped them){more}; rebuild the folder with "
            f"`geopak-data shard --work W --out {folder} --force`, which leaves them out"
        )


def plan_publish(
    folder: str | Path, *, allow_restricted: bool = False, allow_synthetic: bool = False
) -> PublishPlan:
    """Check the shard folder and list the files to upload; GeopakError says what is wrong."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GeopakError(f"shard folder not found: {folder}")
    for name in ("README.md", *(f for f in REQUIRED_FILES if f != "README.md")):
        if not (folder / name).is_file():
            raise GeopakError(
                f"{folder / name} is missing: not a complete geopak shard folder (run `geopak-data shard` first)"
            )
    card = validate_card(folder)
    index = read_table(folder / "index.parquet").to_pandas()
    require_columns(
        index.columns,
        ("key", "split", "shard", "restricted"),
        where=str(folder / "index.parquet"),
        hint="re-run `geopak-data shard`",
    )
    missing = sorted(s for s in set(index["shard"]) if not (folder / s).is_file())
    if missing:
        raise GeopakError(
            f"{len(missing)} shard(s) named in index.parquet are missing, e.g. {folder / missing[0]}"
        )
    refuse_links(folder)
    refuse_credentials(folder, index)
    require_sound(folder, what="publish")
    restricted = int(index["restricted"].fillna(False).astype(bool).sum())
    if restricted and not allow_restricted:
        raise GeopakError(
            f"{folder} holds {restricted} restricted photo(s) (e.g. Google Places) whose terms forbid redistribution; "
            "re-shard without shard.include_restricted, or pass --allow-restricted only if you hold the rights"
        )
    if is_synthetic(folder, index) and not allow_synthetic:
        raise GeopakError(
            f"{folder} is a synthetic dataset (generated photos, e.g. the demo's): it says nothing about real "
            "photos; pass --allow-synthetic only if you mean to publish it as test data"
        )
    files = sorted(
        (p.relative_to(folder).as_posix(), p.stat().st_size)
        for p in folder.rglob("*")
        if p.is_file() and not p.is_symlink() and not _hidden(p.relative_to(folder))
    )
    return PublishPlan(
        folder=folder, files=files, card=card, samples=len(index), restricted=restricted
    )


def is_synthetic(folder: Path, index: Any) -> bool:
    """Whether the shard stage marked the folder synthetic (stats.json, or any sample)."""
    stats = read_json(folder / "stats.json", default={}) or {}
    if stats.get("synthetic"):
        return True
    return SYNTHETIC_FIELD in index.columns and bool(index[SYNTHETIC_FIELD].fillna(False).any())


def render_plan(plan: PublishPlan) -> str:
    """The upload plan as a table (file, size) and a totals line: what --dry-run shows."""
    width = max((len(f) for f, _ in plan.files), default=4)
    lines = [f"{f:<{width}}  {_human(s):>10}" for f, s in plan.files]
    lines.append(f"{len(plan.files)} files, {_human(plan.total_bytes)}, {plan.samples:,} samples")
    return "\n".join(lines)


def resolve_token() -> str | None:
    """HF_TOKEN or the token saved by ``hf auth login`` (huggingface_hub decides the order)."""
    from huggingface_hub import get_token

    return get_token()


def publish(
    folder: str | Path,
    *,
    repo_id: str,
    dry_run: bool = False,
    allow_restricted: bool = False,
    allow_synthetic: bool = False,
    private: bool = False,
    revision: str | None = None,
    api: Any = None,
) -> PublishPlan:
    """Validate ``folder`` and (unless ``dry_run``) upload it to the dataset repo ``repo_id``.

    ``api`` is an ``HfApi``-like object (tests pass a stand-in); by default a real ``HfApi``
    with the resolved token.
    """
    if not REPO_ID.match(repo_id or ""):
        raise GeopakError(f"--repo-id must look like ORG/NAME, got {repo_id!r}")
    plan = plan_publish(folder, allow_restricted=allow_restricted, allow_synthetic=allow_synthetic)
    if dry_run:
        return plan
    if api is None:
        token = resolve_token()
        if not token:
            raise GeopakError(
                "no Hugging Face token: set HF_TOKEN or run `hf auth login` (or use --dry-run)"
            )
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    folder = Path(folder)
    try:
        api.create_repo(repo_id=repo_id, repo_type="dataset", private=private, exist_ok=True)
        upload_large = getattr(api, "upload_large_folder", None)
        if callable(upload_large):
            kwargs: dict[str, Any] = {
                "repo_id": repo_id,
                "folder_path": str(folder),
                "repo_type": "dataset",
                "ignore_patterns": IGNORE_PATTERNS,
            }
            if revision:
                kwargs["revision"] = revision
            upload_large(**kwargs)
        else:
            api.upload_folder(
                repo_id=repo_id,
                folder_path=str(folder),
                repo_type="dataset",
                revision=revision,
                ignore_patterns=IGNORE_PATTERNS,
                commit_message=f"geopak: {plan.samples:,} samples",
            )
    except GeopakError:
        raise
    except Exception as exc:  # noqa: BLE001 - network/auth failures become one line without the token
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise GeopakError(
            f"upload to {repo_id} failed: {_scrub(msg)}; run the same command again to resume"
        ) from None
    return plan


def _scrub(text: str) -> str:
    """Remove anything that looks like a Hugging Face token from a message."""
    return re.sub(r"hf_[A-Za-z0-9]{8,}", "hf_***", text)


def _cmd(args: argparse.Namespace) -> int:
    plan = publish(
        args.dir,
        repo_id=args.repo_id,
        dry_run=args.dry_run,
        allow_restricted=args.allow_restricted,
        allow_synthetic=args.allow_synthetic,
        private=args.private,
        revision=args.revision,
    )
    print(render_plan(plan))
    if args.dry_run:
        print(
            f"dry run: card OK ({', '.join(plan.card.get('size_categories', []))}, license "
            f"{plan.card.get('license')}); nothing uploaded to {args.repo_id}"
        )
    else:
        print(f"uploaded to https://huggingface.co/datasets/{args.repo_id}")
    log.debug("publish done")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``geopak-data publish`` to the CLI."""
    p = sub.add_parser(
        "publish",
        help="upload a shard folder to a Hugging Face dataset repo (resumable)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "dir", type=Path, metavar="DIR", help="the shard folder (output of `geopak-data shard`)"
    )
    p.add_argument(
        "--repo-id",
        required=True,
        metavar="ORG/NAME",
        help="dataset repository on the Hub (created if missing)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="validate the card and list what would be uploaded, with sizes; upload nothing",
    )
    p.add_argument(
        "--allow-restricted",
        action="store_true",
        help="publish even if restricted photos (Google Places) are included -- only with the rights to do so",
    )
    p.add_argument(
        "--allow-synthetic",
        action="store_true",
        help="publish even if the folder is synthetic (the demo's generated photos) -- only as test data",
    )
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--revision", default=None, help="branch to upload to (default: main)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="debug logging")
    p.set_defaults(func=_cmd)
