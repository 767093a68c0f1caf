"""Shared crawl loop of the sources that query an API box by box (Commons, Mapillary).

Why it is built this way:

* **Root tiles are the planner's tiles** (``tiling.tile_grid`` over ``crawl.bbox`` with
  ``coverage.tile_deg``). Without a plan every tile is visited in id order; with ``--plan``
  only tiles below target, most under-covered first, and a tile stops once it has found as
  many new photos as its deficit: budget goes where the data is thin.
* **Boxes fit the API.** Each tile is cut into boxes under the endpoint's own box limit
  (``initial_boxes``); a box whose answer hits the result cap is split into quadrants until
  every leaf is complete (down to ``min_box_deg``; below that the cap is logged).
* **Checkpoints.** Each leaf box is one part (``r012c034-b03s1s2``); a split box leaves an
  empty ``...-split`` part so a resumed crawl re-enters the children without asking again.
  Photos found twice (box edges are inclusive) are kept once; the seen set is seeded from
  the parts already written, so a resumed crawl writes exactly the parts of an uninterrupted
  one. What a source turns down (licence, panorama, ...) is committed with the unit, with
  its reason (``base.write_unit(rejects=...)``).
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Iterator
from typing import Any

from geopak_core.io import PartStore

from ..tiling import Box, PlannedTile, Tile, load_plan, quadrants, tile_grid
from .base import Progress, Source, discovery_rejects, write_unit

log = logging.getLogger("geopak.tiled")


class TiledSource(Source):
    """A source that finds photos box by box inside the planner's tiles."""

    max_photos: int = 0
    min_box_deg: float = 0.001

    def __init__(self, config: Any, endpoint: str | None = None, **opts: Any):
        super().__init__(config, endpoint, **opts)
        self.plan_path = opts.get("plan")
        self.stats: dict[str, int] = {
            "boxes": 0,
            "splits": 0,
            "capped": 0,
            "photos": 0,
            "duplicates": 0,
            "rejected": 0,
            "tiles": 0,
            "tiles_at_budget": 0,
        }

    # ------------------------------------------------------------------ to implement
    @abstractmethod
    def initial_boxes(self, tile: Tile) -> list[Box]:
        """The tile cut into boxes the API accepts."""

    @abstractmethod
    def search(self, box: Box) -> tuple[list[dict[str, Any]], bool]:
        """Hits inside ``box`` (each with ``source_id``) and whether the result cap was hit."""

    @abstractmethod
    def materialise(
        self, hits: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Records (``records.empty_record``) and rejects (records + reason, detail) for new hits."""

    # ------------------------------------------------------------------ plan
    def tiles(self) -> list[Tile]:
        from ..country import crawl_bbox

        return tile_grid(crawl_bbox(self.config), self.config.coverage.tile_deg)

    def planned(self) -> list[PlannedTile]:
        return load_plan(self.plan_path, self.tiles())

    def round_inputs(self) -> dict[str, Any]:
        from pathlib import Path

        return {"plan": Path(self.plan_path)} if self.plan_path else {}

    def extra(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint or "", "tile_deg": self.config.coverage.tile_deg}

    # ------------------------------------------------------------------ crawl
    def discover(self, parts: PartStore, *, progress: Progress) -> None:
        done = parts.done_units()
        seen = self._seen(parts, done)
        for planned in self.planned():
            if self._full(parts, done):
                break
            self._crawl_tile(planned, parts, done, seen, progress)
        log.info("%s: %s", self.name, ", ".join(f"{k} {v}" for k, v in self.stats.items()))

    def _full(self, parts: PartStore, done: set[str]) -> bool:
        return bool(self.max_photos) and self.stats["photos_total"] >= self.max_photos

    def _seen(self, parts: PartStore, done: set[str]) -> set[str]:
        seen: set[str] = set()
        total = 0
        self._tile_counts: dict[str, int] = {}
        rej = discovery_rejects(parts)
        for unit in sorted(done):
            table = parts.read(unit)
            ids = [str(v) for v in table.column("source_id").to_pylist()]
            seen.update(ids)
            total += len(ids)
            tile = unit.split("-", 1)[0]
            self._tile_counts[tile] = self._tile_counts.get(tile, 0) + len(ids)
            if rej.has(unit):
                seen.update(str(v) for v in rej.read(unit).column("source_id").to_pylist())
        self.stats["photos_total"] = total
        return seen

    def _nodes(self, tile: Tile) -> Iterator[tuple[str, Box]]:
        for i, box in enumerate(self.initial_boxes(tile)):
            yield f"{tile.id}-b{i:03d}", box

    def _crawl_tile(
        self,
        planned: PlannedTile,
        parts: PartStore,
        done: set[str],
        seen: set[str],
        progress: Progress,
    ) -> None:
        tile = planned.tile
        self.stats["tiles"] += 1
        stack = list(reversed(list(self._nodes(tile))))
        while stack:
            if self._full(parts, done):
                return
            if planned.budget is not None and self._tile_counts.get(tile.id, 0) >= planned.budget:
                self.stats["tiles_at_budget"] += 1
                return
            name, box = stack.pop()
            children = [(f"{name}s{i}", b) for i, b in enumerate(quadrants(box))]
            if f"{name}-split" in done:
                stack.extend(reversed(children))
                continue
            if name in done:
                continue
            hits, capped = self.search(box)
            self.stats["boxes"] += 1
            if capped and (box[2] - box[0]) / 2.0 >= self.min_box_deg:
                self.stats["splits"] += 1
                self._commit(parts, done, f"{name}-split", [], [], progress, tile)
                stack.extend(reversed(children))
                continue
            if capped:
                self.stats["capped"] += 1
                log.warning(
                    "%s: box %s still hits the result cap at the smallest size; some photos there are unreachable",
                    self.name,
                    name,
                )
            fresh = []
            for h in hits:
                sid = str(h["source_id"])
                if sid in seen:
                    self.stats["duplicates"] += 1
                    continue
                seen.add(sid)
                fresh.append(h)
            records, rejects = self.materialise(fresh) if fresh else ([], [])
            if self.max_photos:
                room = max(0, self.max_photos - self.stats["photos_total"])
                records = records[:room]
            self._commit(parts, done, name, records, rejects, progress, tile)

    def _commit(
        self,
        parts: PartStore,
        done: set[str],
        unit: str,
        records: list[dict[str, Any]],
        rejects: list[dict[str, Any]],
        progress: Progress,
        tile: Tile,
    ) -> None:
        write_unit(parts, unit, records, rejects)
        done.add(unit)
        n = len(records)
        self.stats["photos"] += n
        self.stats["photos_total"] += n
        self.stats["rejected"] += len(rejects)
        self._tile_counts[tile.id] = self._tile_counts.get(tile.id, 0) + n
        progress.update(n)
        progress.set_postfix_str(
            f"boxes={self.stats['boxes']} splits={self.stats['splits']}", refresh=False
        )


__all__ = ["TiledSource"]
