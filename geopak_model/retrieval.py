"""Retrieval refinement (PIGEON-style): inside the chosen cell, answer with the nearest
training photo's location when the photo is a near-neighbour in embedding space.

The offset head moves a cell centre by a smooth function of the image; it cannot know that
this photo shows the very building a training photo showed. A nearest-neighbour search in
the model's own fused embedding space can, and when the neighbour is close enough its
location is far more precise than any regression. Far neighbours are just other places in
the same cell, so a similarity threshold fitted on val decides when to trust them (it is set
above every val similarity, i.e. refinement never fires, when it does not help on val).

The index is compact: the L2-normalised fused embeddings of the training split in float16
(``fusion_dim`` × 2 bytes per photo), their locations (float64: a recovered location is the
training label exactly) and cells, sorted by cell so a query scans only its cell (a batch's
queries all at once, ``RetrievalIndex.search``). It lives
next to the checkpoint (``best.retrieval.npz`` for ``best.pt``) and carries a fingerprint of
the weights that made it, so an index of another model is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from geopak_core.errors import GeopakError
from geopak_core.geo import haversine_km
from geopak_core.io import atomic_path

log = logging.getLogger(__name__)

INDEX_FORMAT = 1
NEVER = 2.0  # a cosine similarity threshold above every possible similarity: off
# gathered embedding floats per step of a search (512 KiB: the fp16 -> fp32 conversion of a
# block that stays in cache is several times faster than of one that does not)
SEARCH_CHUNK = 1 << 17


def index_path_for(checkpoint: str | Path) -> Path:
    """Where the index of ``checkpoint`` lives: ``best.pt`` -> ``best.retrieval.npz``."""
    p = Path(checkpoint)
    return p.with_name(p.stem + ".retrieval.npz")


def model_fingerprint(model: Any) -> str:
    """sha256 over the fusion weights, the encoders' weights and the cell count: everything
    the fused embedding of a photo depends on."""
    from .embed import encoder_fingerprint

    h = hashlib.sha256(encoder_fingerprint(model).encode())
    for name, t in sorted(model.fusion.state_dict().items()):
        h.update(f"{name}:{tuple(t.shape)}".encode())
        h.update(t.detach().cpu().float().contiguous().numpy().tobytes())
    h.update(str(model.cells.num_cells).encode())
    return h.hexdigest()


def embedding(outputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The retrieval embedding of head outputs: the L2-normalised fused vector (B, F)."""
    f = outputs["fused"].float()
    return f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)


@dataclass
class RetrievalIndex:
    """Training embeddings sorted by cell; ``cell_start[c]:cell_start[c+1]`` is cell c."""

    emb: torch.Tensor  # (N, F) float16, unit rows
    lat: np.ndarray  # (N,) float64
    lon: np.ndarray
    cell_id: np.ndarray  # (N,) int64, ascending
    cell_start: np.ndarray  # (num_cells + 1,) int64
    fingerprint: str
    threshold: float = NEVER
    fit: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        emb: np.ndarray,
        lat: npt.ArrayLike,
        lon: npt.ArrayLike,
        cell_id: npt.ArrayLike,
        num_cells: int,
        fingerprint: str,
    ):
        order = np.argsort(np.asarray(cell_id), kind="stable")
        cells = np.asarray(cell_id, dtype=np.int64)[order]
        start = np.searchsorted(cells, np.arange(num_cells + 1), side="left").astype(np.int64)
        return cls(
            emb=torch.from_numpy(np.asarray(emb, dtype=np.float16)[order]),
            lat=np.asarray(lat, dtype=np.float64)[order],
            lon=np.asarray(lon, dtype=np.float64)[order],
            cell_id=cells,
            cell_start=start,
            fingerprint=fingerprint,
        )

    def __len__(self) -> int:
        return int(self.emb.shape[0])

    @property
    def nbytes(self) -> int:
        """Memory of the index (embeddings + locations + cells + offsets)."""
        return int(
            self.emb.numel() * self.emb.element_size()
            + self.lat.nbytes
            + self.lon.nbytes
            + self.cell_id.nbytes
            + self.cell_start.nbytes
        )

    def describe(self) -> dict[str, Any]:
        return {
            "n": len(self),
            "dim": int(self.emb.shape[1]) if len(self) else 0,
            "memory_bytes": self.nbytes,
            "threshold": float(self.threshold),
            "fit": dict(self.fit),
        }

    def candidates(self, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query, index row) of every training photo each query may match: the rows of its
        distinct cells (``cells`` (B, M), -1 padded), queries in order and rows ascending
        within a query, so each query's candidates are one contiguous run. Built with
        ``repeat``/``cumsum`` (no loop over queries)."""
        b, m = cells.shape
        c = np.sort(cells, axis=1)
        keep = (c >= 0) & (c < len(self.cell_start) - 1)
        keep[:, 1:] &= c[:, 1:] != c[:, :-1]  # a cell named twice is searched once
        pair_query = np.repeat(np.arange(b, dtype=np.int64), m)[keep.ravel()]
        pair_cell = c.ravel()[keep.ravel()]
        start = self.cell_start[pair_cell]
        length = self.cell_start[pair_cell + 1] - start
        first = np.repeat(np.cumsum(length) - length, length)  # where each pair's run begins
        rows = np.repeat(start, length) + (np.arange(int(length.sum()), dtype=np.int64) - first)
        return np.repeat(pair_query, length), rows

    def search(
        self, query: torch.Tensor, cells: torch.Tensor, *, chunk_elements: int = SEARCH_CHUNK
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-1 cosine similarity and index row per query among the training photos of its
        cells (-inf / -1 where they have none). ``query`` (B, F) unit rows; ``cells`` (B,) or
        (B, M) with -1 padding: the cell, or the cells of the answered mode.

        One pass over all (query, candidate) pairs of the batch: the candidates' embeddings
        are gathered and multiplied with their queries ``chunk_elements`` floats at a time
        (memory stays bounded whatever the cell sizes), then a segmented max per query; ties
        go to the lowest row, as a per-query argmax over ascending rows would."""
        q = query.detach().float().cpu()
        sim = np.full(len(q), -np.inf)
        row = np.full(len(q), -1, dtype=np.int64)
        if len(q) == 0:
            return sim, row
        cs = cells.detach().cpu().numpy().astype(np.int64).reshape(len(q), -1)
        qi, rows = self.candidates(cs)
        if rows.size == 0:
            return sim, row
        step = max(1, int(chunk_elements) // max(1, int(q.shape[1])))
        s = np.empty(rows.size, dtype=np.float32)
        for lo in range(0, rows.size, step):
            g = torch.index_select(self.emb, 0, torch.from_numpy(rows[lo : lo + step])).float()
            qs = torch.index_select(q, 0, torch.from_numpy(qi[lo : lo + step]))
            s[lo : lo + step] = (g * qs).sum(1).numpy()
        heads = np.flatnonzero(np.r_[True, qi[1:] != qi[:-1]])  # each query's first candidate
        best = np.maximum.reduceat(s, heads)
        lengths = np.diff(np.r_[heads, rows.size])
        at = np.where(s == np.repeat(best, lengths), np.arange(rows.size), rows.size)
        who = qi[heads]
        sim[who], row[who] = best.astype(np.float64), rows[np.minimum.reduceat(at, heads)]
        return sim, row

    def refine_outputs(
        self, result: dict[str, torch.Tensor], outputs: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """:func:`refine` with the query taken from the head outputs that made ``result``."""
        return refine(result, embedding(outputs), self)

    def save(self, path: str | Path) -> Path:
        meta = {
            "format": INDEX_FORMAT,
            "fingerprint": self.fingerprint,
            "threshold": float(self.threshold),
            "fit": self.fit,
        }
        path = Path(path)
        with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as fh:
            np.savez(
                fh,
                emb=self.emb.numpy(),
                lat=self.lat,
                lon=self.lon,
                cell_id=self.cell_id,
                cell_start=self.cell_start,
                meta=np.array(json.dumps(meta, sort_keys=True)),
            )
        return path

    @classmethod
    def load(cls, path: str | Path, model: Any = None) -> RetrievalIndex:
        path = Path(path)
        if not path.is_file():
            raise GeopakError(
                f"retrieval index not found: {path} (build it with geopak-eval --build-index)"
            )
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                arrays = {k: z[k] for k in ("emb", "lat", "lon", "cell_id", "cell_start")}
        except (OSError, ValueError, KeyError) as exc:
            raise GeopakError(f"{path}: not a readable retrieval index ({exc})") from None
        if meta.get("format") != INDEX_FORMAT:
            raise GeopakError(
                f"{path}: retrieval index format {meta.get('format')!r} is not {INDEX_FORMAT}"
            )
        if model is not None and meta["fingerprint"] != model_fingerprint(model):
            raise GeopakError(
                f"{path} was built for other weights than this checkpoint's; rebuild it with geopak-eval --build-index"
            )
        return cls(
            emb=torch.from_numpy(arrays["emb"].astype(np.float16)),
            lat=arrays["lat"],
            lon=arrays["lon"],
            cell_id=arrays["cell_id"],
            cell_start=arrays["cell_start"],
            fingerprint=meta["fingerprint"],
            threshold=float(meta.get("threshold", NEVER)),
            fit=dict(meta.get("fit") or {}),
        )  # fmt: skip


def refine(
    result: dict[str, torch.Tensor],
    query: torch.Tensor,
    index: RetrievalIndex,
    threshold: float | None = None,
) -> dict[str, torch.Tensor]:
    """A copy of ``result`` whose answers move to the nearest training photo of the chosen
    cell (``cell_id``: the answered mode's best hypothesis) where it is at least
    ``threshold`` similar (default: the index's fitted threshold). The province cannot
    change: the cell lies in it. (Searching all the mode's cells, ``answer_cells``, measured
    no better on the demo data: 17.4 vs 16.3 km test median, the same on val.)"""
    thr = index.threshold if threshold is None else float(threshold)
    sim, row = index.search(query, result["cell_id"])
    hit = (row >= 0) & (sim >= thr)
    out = dict(result)
    lat, lon = (
        result["lat"].detach().cpu().double().numpy(),
        result["lon"].detach().cpu().double().numpy(),
    )
    lat, lon = lat.copy(), lon.copy()
    lat[hit], lon[hit] = index.lat[row[hit]], index.lon[row[hit]]
    dev = result["lat"].device
    out["lat"] = torch.as_tensor(lat, dtype=torch.float64, device=dev)
    out["lon"] = torch.as_tensor(lon, dtype=torch.float64, device=dev)
    out["refined"] = torch.as_tensor(hit, device=dev)
    out["neighbour_sim"] = torch.as_tensor(sim, dtype=torch.float32, device=dev)
    return out  # fmt: skip


def fit_threshold(
    sim: npt.ArrayLike, base_err_km: npt.ArrayLike, nn_err_km: npt.ArrayLike
) -> tuple[float, dict[str, Any]]:
    """The similarity threshold minimising val median km (ties: mean km, then the higher
    threshold), among "never" and every observed similarity."""
    sim = np.asarray(sim, dtype=np.float64)
    base = np.asarray(base_err_km, dtype=np.float64)
    nn = np.asarray(nn_err_km, dtype=np.float64)
    finite = np.isfinite(sim)
    cands = [NEVER, *sorted(set(sim[finite].tolist()), reverse=True)]
    best = None
    for t in cands:
        err = np.where(finite & (sim >= t), nn, base)
        key = (float(np.median(err)), float(np.mean(err)))
        if best is None or key < best[0]:
            best = (key, t, float(np.mean(finite & (sim >= t))))
    (med, mean), thr, share = best
    fit = {
        "n_val": int(sim.size),
        "val_median_km_before": float(np.median(base)) if base.size else None,
        "val_median_km_after": med,
        "val_mean_km_before": float(np.mean(base)) if base.size else None,
        "val_mean_km_after": mean,
        "val_refined_share": share,
    }
    return float(thr), fit


@torch.inference_mode()
def _embed_split(model: Any, batches: Iterable[Mapping[str, Any]], device: torch.device):
    """(unit embeddings, lat, lon, cell_id, head outputs per batch) of a split."""
    embs, lat, lon, cell, outs = [], [], [], [], []
    for batch in batches:
        if "clip_feat" in batch:
            cf, pf = batch["clip_feat"].to(device), batch["places_feat"].to(device)
        else:
            cf, pf = model.encode(batch["clip"].to(device), batch["places"].to(device))
        o = model.heads(cf, pf)
        embs.append(embedding(o).cpu().numpy())
        lat.append(batch["lat"].double().numpy())
        lon.append(batch["lon"].double().numpy())
        cell.append(batch["cell_id"].numpy())
        outs.append(o)
    return _cat(embs), _cat(lat), _cat(lon), _cat(cell).astype(np.int64), outs


def _cat(xs: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(xs) if xs else np.zeros(0)


def build_index(
    model: Any,
    train_batches: Iterable[Mapping[str, Any]],
    val_batches: Iterable[Mapping[str, Any]] | None,
    device: torch.device,
    *,
    shapes: Any = None,
) -> RetrievalIndex:
    """Embed the training split, then fit the threshold on val with the ``mode`` answers."""
    from .aggregate import keep_inside
    from .inference import mixture_of_hypotheses

    was = model.training
    model.eval()
    try:
        emb, lat, lon, cell, _ = _embed_split(model, train_batches, device)
        if len(emb) == 0:
            raise GeopakError("the train split yielded no samples: nothing to index")
        index = RetrievalIndex.build(
            emb, lat, lon, cell, model.cells.num_cells, model_fingerprint(model)
        )
        if val_batches is None:
            return index
        sims, base, nn = [], [], []
        vemb, vlat, vlon, _, outs = _embed_split(model, val_batches, device)
        at = 0
        with torch.inference_mode():
            for o in outs:
                cfg = model.config
                r = mixture_of_hypotheses(o, model, None, cfg.top_provinces, cfg.top_cells, "mode")
                keep_inside(r, shapes)
                b = r["lat"].shape[0]
                q = torch.from_numpy(vemb[at : at + b])
                s, row = index.search(q, r["cell_id"])
                tl, tn = vlat[at : at + b], vlon[at : at + b]
                base.append(
                    haversine_km(
                        r["lat"].cpu().double().numpy(), r["lon"].cpu().double().numpy(), tl, tn
                    )
                )
                ok = row >= 0
                nn.append(
                    np.where(ok, haversine_km(index.lat[row], index.lon[row], tl, tn), np.inf)
                )
                sims.append(s)
                at += b
        if at:
            index.threshold, index.fit = fit_threshold(
                np.concatenate(sims), np.concatenate(base), np.concatenate(nn)
            )
        return index
    finally:
        model.train(was)  # fmt: skip
