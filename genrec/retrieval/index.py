"""Top-k items by inner product with faiss: exact (``IndexFlatIP``) or approximate (``IndexIVFFlat``,
``IndexHNSWFlat``).

Item i of a catalogue 1..N is faiss id ``i - 1`` (row ``i - 1`` of the vectors). A search can leave
out items per query (e.g. the user's history): it asks faiss for ``k`` plus the longest excluded
list and drops the excluded ones, so every row still gets the best ``k`` of the rest. Rows that
cannot be filled (fewer than k items left, or an IVF probe that reaches too few) end with item -1
and score -inf, as in :meth:`genrec.models.base.Recommender.recommend_indices`.

Shapes: N items, d vector width, B queries, k list length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["INDEX_KINDS", "InnerProductIndex"]

INDEX_KINDS = ("flat", "ivf", "hnsw")


class InnerProductIndex:
    """A faiss inner-product index over item vectors.

    Args:
        vectors: [N, d] float vectors of items 1..N (row ``i - 1`` is item i).
        kind: ``flat`` (exact, the default), ``ivf`` (``IndexIVFFlat``) or ``hnsw`` (``IndexHNSWFlat``, a
            graph of ``hnsw_m`` links per node): approximate, for large catalogues.
        nlist: IVF cells (default ``4 sqrt(N)``, at most N / 39 so every cell trains on 39 items).
        nprobe: IVF cells searched per query.
        hnsw_m: HNSW links per node.
        ef_search: HNSW candidate list per query (raised to the list length asked for when smaller).
    """

    def __init__(self, vectors: np.ndarray, kind: str = "flat", nlist: int | None = None, nprobe: int = 8,
                 hnsw_m: int = 32, ef_search: int = 64):
        import faiss

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, d = vectors.shape
        if kind == "flat":
            index = faiss.IndexFlatIP(d)
        elif kind == "ivf":
            nlist = nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))
            if not 1 <= nlist <= n:
                raise ValueError(f"nlist must be in 1..{n} (the number of items), got {nlist}")
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(vectors)
            index.nprobe = nprobe
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = ef_search
        else:
            raise ValueError(f"unknown index kind {kind!r}; use one of {', '.join(INDEX_KINDS)}")
        index.add(vectors)
        self.index, self.kind, self.num_items = index, kind, n

    def search(self, queries: np.ndarray, k: int,
               exclude: Sequence[np.ndarray] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k items LongTensor [B, k] (1..N, -1 where unfilled) and float32 scores [B, k], best first.

        Args:
            queries: [B, d] query vectors.
            k: list length, 1..N.
            exclude: per query, item indices to leave out (``None``: nothing left out).
        """
        if not 1 <= k <= self.num_items:
            raise ValueError(f"k must be in 1..{self.num_items} (the number of items), got {k}")
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        extra = max((len(np.asarray(e)) for e in exclude), default=0) if exclude is not None else 0
        if self.kind == "hnsw" and self.index.hnsw.efSearch < k + extra:
            self.index.hnsw.efSearch = k + extra
        scores, ids = self.index.search(queries, min(self.num_items, k + extra))
        items = torch.full((len(queries), k), -1, dtype=torch.long)
        top = torch.full((len(queries), k), float("-inf"))
        for b in range(len(queries)):
            seen = set(np.asarray(exclude[b]).tolist()) if exclude is not None else set()
            row = [(i + 1, s) for i, s in zip(ids[b].tolist(), scores[b].tolist()) if i >= 0 and i + 1 not in seen][:k]
            if row:
                items[b, :len(row)] = torch.tensor([i for i, _ in row])
                top[b, :len(row)] = torch.tensor([s for _, s in row])
        return items, top
