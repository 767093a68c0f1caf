"""The batched retrieval search against the per-query loop it replaced, on random data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geopak_model.retrieval import RetrievalIndex


def loop_search(index: RetrievalIndex, query: torch.Tensor, cells: torch.Tensor):
    """The per-query implementation of geopak 0.2 (kept here as the reference)."""
    q = query.detach().float().cpu()
    cs = cells.detach().cpu().numpy().astype(np.int64).reshape(len(q), -1)
    sim = np.full(len(q), -np.inf)
    row = np.full(len(q), -1, dtype=np.int64)
    for b in range(len(q)):
        rows = [
            np.arange(index.cell_start[c], index.cell_start[c + 1]) for c in set(cs[b]) if c >= 0
        ]
        rows = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        if rows.size == 0:
            continue
        s = index.emb[torch.from_numpy(rows)].float() @ q[b]
        j = int(torch.argmax(s))
        sim[b], row[b] = float(s[j]), int(rows[j])
    return sim, row


def random_index(rng: np.random.Generator, n: int, dim: int, cells: int) -> RetrievalIndex:
    emb = rng.normal(size=(n, dim))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    # uneven cells, some of them empty (ids never drawn)
    cell = rng.choice(cells, size=n, p=rng.dirichlet(np.full(cells, 0.3)))
    return RetrievalIndex.build(
        emb, rng.uniform(24, 37, n), rng.uniform(61, 77, n), cell, cells, "x"
    )


def unit(rng: np.random.Generator, b: int, dim: int) -> torch.Tensor:
    q = torch.from_numpy(rng.normal(size=(b, dim))).float()
    return q / q.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("width", [1, 4])
@pytest.mark.parametrize("chunk", [1 << 17, 1000])  # one step, and many small ones
def test_batched_search_equals_the_per_query_loop(seed: int, width: int, chunk: int) -> None:
    rng = np.random.default_rng(seed)
    index = random_index(rng, 4000, 24, 60)
    b = 257
    q = unit(rng, b, 24)
    cells = rng.integers(-1, 60, size=(b, width))  # -1 padding
    if width > 1:
        cells[::5, 1] = cells[::5, 0]  # a cell named twice
    cells[3] = -1  # a query with no cell at all
    t = torch.from_numpy(cells).squeeze(1) if width == 1 else torch.from_numpy(cells)
    want_sim, want_row = loop_search(index, q, t)
    got_sim, got_row = index.search(q, t, chunk_elements=chunk)
    assert np.array_equal(np.isfinite(got_sim), np.isfinite(want_sim))
    assert np.array_equal(got_row < 0, want_row < 0) and got_row[3] == -1
    ok = want_row >= 0
    np.testing.assert_allclose(got_sim[ok], want_sim[ok], rtol=0, atol=1e-5)
    # the same neighbour, or (float ties) one exactly as similar
    same = got_row[ok] == want_row[ok]
    assert same.mean() > 0.99
    emb = index.emb.float().numpy()
    qn = q.numpy()
    idx = np.flatnonzero(ok)[~same]
    np.testing.assert_allclose(
        (emb[got_row[idx]] * qn[idx]).sum(1), (emb[want_row[idx]] * qn[idx]).sum(1), atol=1e-5
    )


def test_ties_go_to_the_lowest_row_and_empty_batches() -> None:
    emb = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    index = RetrievalIndex.build(emb, [1, 2, 3, 4], [5, 6, 7, 8], [0, 0, 1, 1], 3, "x")
    q = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    sim, row = index.search(q, torch.tensor([[1, 0], [2, -1], [1, 1]]))
    assert row.tolist() == [0, -1, 2] and sim[1] == -np.inf
    np.testing.assert_allclose(sim[[0, 2]], [1.0, 1.0], atol=1e-3)
    sim, row = index.search(q[:0], torch.zeros((0,), dtype=torch.int64))
    assert sim.shape == (0,) and row.shape == (0,)
