"""Metrics of a language model's ranked answer lists (RecLM-eval), and its error taxonomy.

An answer is a list of entries, each mapped to an item index or ``None`` (an entry the
:class:`~genrec.evaluation.title_matcher.TitleMatcher` could not map). It is scored against the
row's target item through the relevance list ``rel`` (``rel[i] = 1`` if entry ``i`` is the target
and no earlier entry was, as RecAI's ``evaluate_once`` counts one ground truth at most once; an
unmapped entry keeps its position with ``rel = 0``). With ``rank`` = the 0-based position of the
first relevant entry (none: a miss at every K), for one target per row:

- ``hit@K`` = ``[rank < K]``; ``recall@K`` = hits in the first K / number of targets = ``hit@K``;
- ``precision@K`` = hits in the first K / K (RecAI divides by ``min(K, len(list))`` instead, which
  makes a 10-title answer's precision@20 twice the standard value);
- ``ndcg@K`` = ``1 / log2(rank + 2)`` if ``rank < K`` (the ideal DCG of one target is 1);
- ``mrr@K`` = ``1 / (rank + 1)`` if ``rank < K``;
- ``map@K`` = average precision of the first K entries = mean over relevant positions p of
  (hits up to p) / (p + 1), which is ``1 / (rank + 1)`` with one target.

All are means over rows. :func:`answer_errors` flags the error taxonomy of one answer (RecAI's
``compute_errors_on_title_ranking``); :func:`error_rates` averages the flags over rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["LM_KS", "answer_errors", "error_rates", "lcs_length", "list_metrics", "relevance"]

LM_KS = (1, 5, 10, 20)
"""Cut-offs of RecLM-eval (RecAI PR #36)."""

ERROR_KINDS = ("not_in_catalogue", "not_in_candidates", "duplicate", "in_history")
"""Per-answer error flags; each rate is the share of answers with at least one such entry."""


def relevance(items: Sequence[int | None], targets: Sequence[int]) -> list[int]:
    """0/1 relevance of each entry: a target item not seen earlier in the list.

    Args:
        items: the answer's entries as item indices (``None`` = unmapped), best first.
        targets: the relevant item indices of the row (usually one).
    """
    wanted, seen, rel = set(targets), set(), []
    for item in items:
        hit = item is not None and item in wanted and item not in seen
        rel.append(int(hit))
        if hit:
            seen.add(item)
    return rel


def list_metrics(rels: Sequence[Sequence[int]], num_relevant: Sequence[int] | int = 1,
                 ks: Sequence[int] = LM_KS) -> dict[str, float]:
    """hit, recall, precision, ndcg, mrr and map at every K, averaged over rows.

    Args:
        rels: per row, the 0/1 relevance list of its answer (any length, may be empty).
        num_relevant: relevant items per row (an int for all rows); ``ndcg`` divides by the DCG of
            ``min(K, num_relevant)`` hits at the top, ``recall`` by ``num_relevant``.
        ks: cut-offs, each >= 1.

    Returns:
        ``{"hit@1": ..., "recall@1": ..., "precision@1": ..., "ndcg@1": ..., "mrr@1": ...,
        "map@1": ..., "hit@5": ...}`` (metric-major within each K), Python floats.

    Raises:
        ValueError: no rows, a bad cut-off, or a row with no relevant item.
    """
    if len(rels) == 0:
        raise ValueError("no rows to average a metric over: the evaluation has no answers")
    counts = [num_relevant] * len(rels) if isinstance(num_relevant, int) else list(num_relevant)
    if len(counts) != len(rels) or min(counts) < 1:
        raise ValueError(f"num_relevant must give a count >= 1 for each of the {len(rels)} rows")
    out: dict[str, float] = {}
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"cut-off k must be a positive integer, got {k!r}")
        rows = {name: [] for name in ("hit", "recall", "precision", "ndcg", "mrr", "map")}
        for rel, n in zip(rels, counts):
            top = [int(bool(r)) for r in list(rel)[:k]]
            hits = sum(top)
            first = top.index(1) if hits else None
            rows["hit"].append(float(hits > 0))
            rows["recall"].append(hits / n)
            rows["precision"].append(hits / k)
            dcg = sum(1.0 / math.log2(i + 2) for i, r in enumerate(top) if r)
            ideal = sum(1.0 / math.log2(i + 2) for i in range(min(k, n)))
            rows["ndcg"].append(dcg / ideal)
            rows["mrr"].append(0.0 if first is None else 1.0 / (first + 1))
            precisions = [sum(top[:i + 1]) / (i + 1) for i, r in enumerate(top) if r]
            rows["map"].append(sum(precisions) / min(k, n) if precisions else 0.0)
        out.update({f"{name}@{k}": float(np.mean(values)) for name, values in rows.items()})
    return out


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence of two sequences (``None`` never matches)."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x is not None and x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def answer_errors(items: Sequence[int | None], history: Sequence[int],
                  candidates: Sequence[int] | None = None) -> dict[str, float]:
    """Error flags of one answer (RecAI's taxonomy), each 0 or 1, plus the copy measures.

    - ``not_in_catalogue``: an entry maps to no item;
    - ``not_in_candidates`` (ranking only): an entry is not one of the candidates (unmapped
      entries included, as RecAI's check "similarity to every candidate < threshold");
    - ``duplicate``: an entry repeats an earlier entry's item;
    - ``in_history``: an entry is an item of the shown history;
    - ``copy_error``: length of the longest common subsequence of the answer and the input order
      (history then candidates; RecAI's mean LCS, "copy of the input order");
    - ``copies_input`` (ranking only): the answer lists the candidates exactly in the input order.

    Args:
        items: the answer's entries as item indices, ``None`` for unmapped ones.
        history: item indices shown as the history, in prompt order.
        candidates: item indices shown as candidates, in prompt order (``None`` for retrieval).
    """
    seen: set[int] = set()
    flags = dict.fromkeys(ERROR_KINDS, 0.0)
    history_set = set(history)
    candidate_set = set(candidates) if candidates is not None else None
    for item in items:
        if item is None:
            flags["not_in_catalogue"] = 1.0
        if candidate_set is not None and item not in candidate_set:
            flags["not_in_candidates"] = 1.0
        if item is not None and item in seen:
            flags["duplicate"] = 1.0
        if item is not None and item in history_set:
            flags["in_history"] = 1.0
        if item is not None:
            seen.add(item)
    flags["copy_error"] = float(lcs_length(items, list(history) + list(candidates or [])))
    if candidates is not None:
        flags["copies_input"] = float(len(candidates) > 0 and list(items[:len(candidates)]) == list(candidates))
    else:
        flags.pop("not_in_candidates")
    return flags


def error_rates(flags: Sequence[dict[str, float]]) -> dict[str, float]:
    """Means of :func:`answer_errors` over rows, named ``<flag>_rate`` (``copy_error`` stays a mean LCS)."""
    if not flags:
        return {}
    keys = list(flags[0])
    return {(key if key == "copy_error" else f"{key}_rate"): float(np.mean([f[key] for f in flags])) for key in keys}
