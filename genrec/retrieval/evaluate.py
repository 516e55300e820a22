"""Per-query-type retrieval metrics of a text encoder over a faiss index of item texts.

Every item text is encoded once and indexed (:class:`~genrec.retrieval.index.InnerProductIndex`,
flat by default); each query retrieves its top 20 with its ``exclude`` items left out, and is scored
against its ``answers`` (one item for most types, the top-10 co-occurring items for ``i2i``):

* Hit@K: 1 if any answer is in the top K;
* Recall@K: answers in the top K / number of answers;
* NDCG@K: binary-relevance DCG of the top K over the ideal DCG of min(answers, K) hits.

``random_hit@K`` is the exact expected Hit@K of a uniformly random ranking of the candidates
(1 - C(M - a, K) / C(M, K) with M candidates and a answers), the floor every type must beat.
Shapes: N items, Q queries, D width.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from genrec.retrieval.index import InnerProductIndex
from genrec.retrieval.queries import Query

__all__ = ["KS", "evaluate_queries", "random_hit", "summarize"]

KS = (1, 5, 10, 20)


def random_hit(candidates: int, answers: int, k: int) -> float:
    """Expected Hit@k of a random ranking of ``candidates`` items holding ``answers`` relevant ones."""
    if k >= candidates:
        return 1.0
    return 1.0 - math.exp(math.lgamma(candidates - answers + 1) - math.lgamma(candidates - answers - k + 1)
                          - math.lgamma(candidates + 1) + math.lgamma(candidates - k + 1))


def _row_metrics(ranked: list[int], answers: set[int], ks: Sequence[int]) -> dict[str, float]:
    out = {}
    gains = [1.0 if item in answers else 0.0 for item in ranked]
    for k in ks:
        top = gains[:k]
        ideal = sum(1.0 / math.log2(r + 2) for r in range(min(len(answers), k)))
        out[f"hit@{k}"] = float(any(top))
        out[f"recall@{k}"] = sum(top) / len(answers)
        out[f"ndcg@{k}"] = sum(g / math.log2(r + 2) for r, g in enumerate(top)) / ideal
    return out


def evaluate_queries(query_vectors: np.ndarray, queries: list[Query], item_vectors: np.ndarray,
                     ks: Sequence[int] = KS, index_kind: str = "flat") -> dict[str, float]:
    """Metrics per query type (``"<type>/hit@10"`` ...) and their mean over types (``"mean/hit@10"``).

    Args:
        query_vectors: [Q, D], row q for ``queries[q]``.
        queries: the queries, with answers and exclusions (item indices 1..N).
        item_vectors: [N, D], row i - 1 for item i.
        ks: cut-offs.
        index_kind: ``flat`` (exact) or ``hnsw`` / ``ivf`` (approximate).
    """
    if len(query_vectors) != len(queries) or not queries:
        raise ValueError(f"evaluate_queries got {len(query_vectors)} vectors for {len(queries)} queries (need >= 1)")
    index = InnerProductIndex(item_vectors, kind=index_kind)
    k = min(max(ks), len(item_vectors))
    items, _ = index.search(query_vectors, k, exclude=[np.asarray(q.exclude, dtype=np.int64) for q in queries])
    rows: dict[str, list[dict[str, float]]] = defaultdict(list)
    for query, ranked in zip(queries, items.tolist()):
        metrics = _row_metrics(ranked, set(query.answers), ks)
        for cut in ks:
            metrics[f"random_hit@{cut}"] = random_hit(len(item_vectors) - len(set(query.exclude)), len(query.answers),
                                                      cut)
        rows[query.kind].append(metrics)
    return summarize(rows)


def summarize(rows: dict[str, list[dict[str, float]]]) -> dict[str, float]:
    """Means per type of per-query metric rows, the mean over types, and the number of queries per type."""
    out: dict[str, float] = {}
    per_type = {kind: {name: float(np.mean([r[name] for r in values])) for name in values[0]}
                for kind, values in rows.items()}
    for kind, metrics in per_type.items():
        out.update({f"{kind}/{name}": round(value, 6) for name, value in metrics.items()})
        out[f"{kind}/queries"] = len(rows[kind])
    for name in next(iter(per_type.values())):
        out[f"mean/{name}"] = round(float(np.mean([m[name] for m in per_type.values()])), 6)
    return out


def encoder_evaluator(item_texts: list[str], queries: dict[str, list[Query]], ks: Sequence[int] = KS,
                      index_kind: str = "flat"):
    """The ``evaluate(model, which, accelerator)`` of :func:`genrec.training.fit` for a
    :class:`~genrec.retrieval.encoder.RetrievalEncoder`: encodes every item text and the queries of
    ``which`` and returns :func:`evaluate_queries`.

    Args:
        item_texts: text of item i at position i - 1.
        queries: ``valid`` and ``test`` query lists.
    """

    def evaluate(model, which, accelerator=None):
        items = model.encode(item_texts, query=False, desc=f"encoding {len(item_texts)} items ({which})")
        rows = queries[which]
        vectors = model.encode([q.text for q in rows], query=True, desc=f"encoding {len(rows)} {which} queries")
        return evaluate_queries(vectors, rows, items, ks, index_kind)

    return evaluate
