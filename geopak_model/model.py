"""The GEOPAK network: dual encoders, gated fusion, province-gated geocell heads, offsets.

    image ─┬─ CLIP ViT ─────── clip_feat ───┐
           └─ ResNet-Places ── places_feat ─┴─ GatedFusion ── fused (B, F) ─┬─ province head (7)
                                                                              ├─ cell heads, one per province
                                                                              ├─ offset head (+ cell/province emb)
                                                                              └─ aux head (lat, lon), training only

Everything below the encoders ("heads") also runs on cached encoder features, which is how
phases 0 and 1 can train from an embedding cache. The cell heads form a mixture of experts:
province p's head owns the columns of p's cells in ``cell_logits`` (global cell-id order), so
P(cell | province) is a softmax over those columns only (``conditional_cell_log_probs``).
The offset head refines a chosen cell's center by a bounded (Δlat, Δlon) in units of that
cell's radius: the cell already says where the photo is to within its radius, so the offset
can never move a prediction out of the neighbourhood the classifier chose.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from geopak_core.geo import EARTH_RADIUS_KM

from .cells import CellTable
from .config import ModelConfig
from .encoders import ClipEncoder, PairTransform, PlacesEncoder, preprocess_info

log = logging.getLogger(__name__)

KM_PER_DEG_LAT = math.pi * EARTH_RADIUS_KM / 180.0  # ~111.195 km


def mlp(d_in: int, hidden: list[int], d_out: int, dropout: float = 0.0) -> nn.Sequential:
    """A Linear-GELU-Dropout stack ending in a plain Linear: the shape shared by every head."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(d_in, h), nn.GELU(), nn.Dropout(dropout)]
        d_in = h
    layers.append(nn.Linear(d_in, d_out))
    return nn.Sequential(*layers)


def conditional_cell_log_probs(
    cell_logits: torch.Tensor, cell_province: torch.Tensor, num_provinces: int | None = None
) -> torch.Tensor:
    """log P(cell | its province): a log-softmax within each province's columns. (B, N) fp32.

    A large finite fill (not -inf) keeps gradients finite for provinces that have no cells.
    ``num_provinces`` is the region table's size (default: the highest id in use + 1).
    """
    x = cell_logits.float()
    k = int(num_provinces) if num_provinces else int(cell_province.max().item()) + 1
    provinces = torch.arange(k, device=x.device)
    masks = cell_province[None, :] == provinces[:, None]  # (K, N)
    lse = torch.logsumexp(x[:, None, :].masked_fill(~masks, -1e30), dim=-1)  # (B, K)
    return x - lse[:, cell_province]


class GatedFusion(nn.Module):
    """Project both features to F dims; a per-image, per-dimension gate g mixes them.

    fused = g * clip + (1 - g) * places. The gate is returned so analysis can see, image by
    image, whether the semantic or the scene encoder carried the decision.
    """

    def __init__(self, clip_dim: int, places_dim: int, dim: int, dropout: float):
        super().__init__()
        self.clip_proj = nn.Sequential(nn.LayerNorm(clip_dim), nn.Linear(clip_dim, dim))
        self.places_proj = nn.Sequential(nn.LayerNorm(places_dim), nn.Linear(places_dim, dim))
        self.gate = nn.Linear(2 * dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(
        self, clip_feat: torch.Tensor, places_feat: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        c, s = self.clip_proj(clip_feat), self.places_proj(places_feat)
        g = torch.sigmoid(self.gate(torch.cat([c, s], dim=-1)))
        fused = self.drop(self.norm(g * c + (1.0 - g) * s))
        return fused, g


class GeopakModel(nn.Module):
    """The architecture only: random weights, no file access (see ``build_model``)."""

    def __init__(self, config: ModelConfig, cells: CellTable):
        super().__init__()
        config.validate()
        self.config, self.cells = config, cells
        F, N = config.fusion_dim, cells.num_cells

        self.clip = ClipEncoder(config)
        self.places = PlacesEncoder(config)
        self.clip_dim, self.places_dim = self.clip.out_dim, self.places.out_dim
        self.preprocess = {
            "clip": preprocess_info(config, "clip"),
            "places": preprocess_info(config, "places"),
        }

        self.fusion = GatedFusion(self.clip_dim, self.places_dim, F, config.fusion_dropout)
        hidden = [config.head_hidden] if config.head_hidden else []
        self.num_provinces = cells.num_provinces  # the region table decides the head's size
        self.province_head = mlp(F, hidden, self.num_provinces)
        # One expert per province that has cells, sized by its cell count.
        self.present = [p for p, n in enumerate(cells.cells_per_province()) if n > 0]
        self.cell_heads = nn.ModuleDict(
            {str(p): mlp(F, hidden, len(cells.cells_of_province(p))) for p in self.present}
        )
        self.province_emb = nn.Embedding(self.num_provinces, config.province_emb_dim)
        self.cell_emb = nn.Embedding(N, config.cell_emb_dim)
        self.offset_head = mlp(
            F + config.province_emb_dim + config.cell_emb_dim, config.offset_hidden, 2
        )
        self.aux_head = mlp(F, config.aux_hidden, 2)
        # Zero-init the last layers: training starts from "the cell center" and "the centroid".
        for head in (self.offset_head, self.aux_head):
            nn.init.zeros_(head[-1].weight)
            nn.init.zeros_(head[-1].bias)

        # Cell geometry as buffers so it follows .to(device). Not persistent: the cell table
        # travels in the checkpoint as plain data and rebuilds these.
        perm = torch.cat([torch.from_numpy(cells.cells_of_province(p)) for p in self.present])
        centers = torch.from_numpy(np.stack([cells.center_lat, cells.center_lon], axis=1)).float()
        self.register_buffer(
            "cell_province", torch.from_numpy(cells.province_id.copy()), persistent=False
        )
        self.register_buffer("cell_centers", centers, persistent=False)  # (N, 2) degrees
        self.register_buffer(
            "cell_radius_km", torch.from_numpy(cells.radius_km.copy()).float(), persistent=False
        )
        self.register_buffer("cell_col_inverse", torch.argsort(perm), persistent=False)
        self.register_buffer("aux_mean", centers.mean(0), persistent=False)
        self.register_buffer(
            "aux_scale", centers.std(0, unbiased=False).clamp_min(1.0), persistent=False
        )

        # Where each encoder's weights came from (build_model / checkpoints fill it in).
        self.encoder_provenance: dict[str, dict[str, Any]] = {}
        self.phase = -1
        self.set_phase(1)  # encoders frozen by default, as in the seed

    # ------------------------------------------------------------------ forward pieces

    def encode(
        self, clip_pixels: torch.Tensor, places_pixels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Both encoders; a fully frozen one runs without autograd (no activations kept)."""
        feats = []
        for enc, x in ((self.clip, clip_pixels), (self.places, places_pixels)):
            if any(p.requires_grad for p in enc.parameters()):
                feats.append(enc(x))
            else:
                with torch.no_grad():
                    feats.append(enc(x))
        return feats[0], feats[1]

    def heads(self, clip_feat: torch.Tensor, places_feat: torch.Tensor) -> dict[str, torch.Tensor]:
        fused, gate = self.fusion(clip_feat.float(), places_feat.float())
        per_province = torch.cat([self.cell_heads[str(p)](fused) for p in self.present], dim=1)
        return {
            "fused": fused,
            "gate": gate,
            "province_logits": self.province_head(fused),
            "cell_logits": per_province[:, self.cell_col_inverse],  # back to global cell order
            "aux_latlon": self.aux_mean + self.aux_head(fused) * self.aux_scale,
        }

    def offset(
        self, fused: torch.Tensor, cell_ids: torch.Tensor, province_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Bounded (Δlat, Δlon) in degrees for each cell in ``cell_ids`` ((B,) or (B, M)).

        The raw output is tanh-squashed to ±offset_bound and scaled by the cell's radius in km
        (with a floor), then converted to degrees at the cell's latitude.
        """
        if province_ids is None:
            province_ids = self.cell_province[cell_ids]
        if cell_ids.dim() == 2:  # several hypotheses per image share the image's fused vector
            fused = fused[:, None, :].expand(-1, cell_ids.shape[1], -1)
        h = torch.cat([fused, self.cell_emb(cell_ids), self.province_emb(province_ids)], dim=-1)
        unit = torch.tanh(self.offset_head(h)) * self.config.offset_bound
        km = self.cell_radius_km[cell_ids].clamp_min(self.config.offset_min_radius_km)
        lat = self.cell_centers[cell_ids][..., 0]
        dlat = unit[..., 0] * km / KM_PER_DEG_LAT
        dlon = unit[..., 1] * km / (KM_PER_DEG_LAT * torch.cos(torch.deg2rad(lat)).clamp_min(0.05))
        return torch.stack([dlat, dlon], dim=-1)

    def forward(
        self,
        clip_pixels: torch.Tensor,
        places_pixels: torch.Tensor,
        cell_ids: torch.Tensor | None = None,
        province_ids: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """heads(encode(...)); with ``cell_ids`` (training), also the offset for those cells."""
        out = self.heads(*self.encode(clip_pixels, places_pixels))
        if cell_ids is not None:
            out["offset"] = self.offset(out["fused"], cell_ids, province_ids)
        return out

    def transforms(self, train: bool = False) -> PairTransform:
        """PIL image -> (clip tensor, places tensor), each with its encoder's own recipe."""
        return PairTransform(self.preprocess["clip"], self.preprocess["places"], train=train)

    # ------------------------------------------------------------------ training policy

    def set_phase(self, phase: int, unfreeze_last_n: int | None = None) -> None:
        """Choose what trains. 0: fusion + province head. 1: every head, encoders frozen.
        2: as 1, plus the last ``unfreeze_last_n`` blocks (and what follows them) of each
        encoder. An encoder configured with freeze_*=False trains whole in every phase.
        """
        if phase not in (0, 1, 2):
            raise ValueError(f"phase must be 0, 1 or 2, got {phase}")
        n = self.config.unfreeze_last_n if unfreeze_last_n is None else int(unfreeze_last_n)
        self.requires_grad_(False)
        trainable: list[nn.Module] = [self.fusion, self.province_head]
        if phase >= 1:
            trainable += [
                self.cell_heads,
                self.province_emb,
                self.cell_emb,
                self.offset_head,
                self.aux_head,
            ]
        for m in trainable:
            m.requires_grad_(True)
        for enc, frozen in (
            (self.clip, self.config.freeze_clip),
            (self.places, self.config.freeze_places),
        ):
            if not frozen:
                enc.requires_grad_(True)
            elif phase == 2 and n > 0:
                _unfreeze_tail(enc, n)
        self.phase = phase
        self.train(self.training)  # re-apply the frozen-BatchNorm policy

    def train(self, mode: bool = True) -> GeopakModel:
        """Frozen parts stay in eval mode: a frozen ResNet's BatchNorm statistics must not
        drift with our batches, and a frozen tower has no business applying dropout."""
        super().train(mode)
        if mode:
            for enc in (self.clip, self.places):
                if not any(p.requires_grad for p in enc.parameters()):
                    enc.eval()
            for m in self.modules():
                if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d | nn.SyncBatchNorm):
                    if not any(p.requires_grad for p in m.parameters(recurse=False)):
                        m.eval()
        return self

    def param_groups(
        self, base_lr: float, encoder_lr: float, weight_decay: float = 0.0
    ) -> list[dict[str, Any]]:
        """Optimiser groups for the trainable parameters: heads at ``base_lr``, each encoder
        at ``encoder_lr`` (much smaller: phase 2 adapts, it must not overwrite pretraining).
        With weight_decay > 0, biases and norm gains (1-D) go to separate no-decay groups."""
        named = {
            "heads": [
                (n, p) for n, p in self.named_parameters() if not n.startswith(("clip.", "places."))
            ],
            "clip": list(self.clip.named_parameters()),
            "places": list(self.places.named_parameters()),
        }
        groups: list[dict[str, Any]] = []
        for name, params in named.items():
            lr = base_lr if name == "heads" else encoder_lr
            params = [p for _, p in params if p.requires_grad]
            if weight_decay > 0:
                split = [
                    (name, [p for p in params if p.dim() >= 2], weight_decay),
                    (f"{name}_no_decay", [p for p in params if p.dim() < 2], 0.0),
                ]
            else:
                split = [(name, params, 0.0)]
            groups += [
                {"name": gname, "params": ps, "lr": lr, "weight_decay": wd}
                for gname, ps, wd in split
                if ps
            ]
        return groups

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def _unfreeze_tail(enc: ClipEncoder | PlacesEncoder, n: int) -> None:
    """Unfreeze the last n blocks and every parameter after the blocks (e.g. ViT ln_post/proj)."""
    blocks = enc.blocks()
    in_blocks = {id(p) for b in blocks for p in b.parameters()}
    for b in blocks[-min(n, len(blocks)) :]:
        b.requires_grad_(True)
    for name, p in enc.named_parameters():
        if id(p) not in in_blocks and not name.startswith(enc.stem_prefixes()):
            p.requires_grad_(True)


def build_model(config: ModelConfig, cells: CellTable) -> GeopakModel:
    """The network with its encoders' pretrained weights, as the config names them.

    Each encoder loads its local file (``clip_weights`` / ``places_weights``) or the pretrained
    weights named by ``clip_pretrained`` / ``places_weights_url`` (fetched through
    :mod:`weights`, which raises one line when they cannot be had). An encoder with nothing
    named is an error, unless the config says ``random_init`` (the ``tiny`` preset, or
    ``--random-init``): then it starts random, with one warning naming what is random. Where
    each encoder's weights came from is kept in ``model.encoder_provenance`` (and checkpoints).
    """
    from . import weights

    model = GeopakModel(config, cells)
    random = []
    for key, enc, what in (("clip", model.clip, "CLIP"), ("places", model.places, "Places365")):
        if weights.named(config, key):
            wf = weights.resolve(config, key)
            enc.load_weights(wf.path)
            model.encoder_provenance[key] = wf.provenance()
            log.info("loaded %s weights %s (sha256 %s)", what, wf.path, wf.sha256[:12])
        elif config.random_init:
            random.append(f"{what} ({enc.name})")
            model.encoder_provenance[key] = weights.random_provenance(
                f"{config.preset}: random_init"
            )
        else:
            raise weights.WeightsUnavailable(
                f"no {what} weights named for {config.preset!r} ({enc.name}): set "
                f"{'clip_pretrained or clip_weights' if key == 'clip' else 'places_weights_url or places_weights'}"
                " in the model config, or pass --random-init for random encoders"
            )
    if random:
        warnings.warn(
            f"GEOPAK: no pretrained weights for {' and '.join(random)}: encoder(s) randomly initialised"
            f" ({'the tiny preset is random by design' if config.preset == 'tiny' else 'random_init'}).",
            UserWarning,
            stacklevel=2,
        )
    return model
