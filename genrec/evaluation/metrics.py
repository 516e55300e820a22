"""Ranking metrics for next-item recommendation with one target per row.

Every metric is a small pure function over a vector of 0-based ranks (rank 0 = the target is
first), in the style of RecBole's ``evaluator/metrics.py``: first turn model outputs into ranks
(:func:`ranks_from_scores` for score matrices, :func:`ranks_from_ranked_lists` for the top-K item
ids of generative models), then average a per-row gain. With a single target per row, Recall@K
equals Hit Ratio@K, so only ``recall@k`` is reported.

Shapes: B rows (users), N items (indices 1..N; column 0 of a score matrix is padding), K list
length.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

KS = (1, 5, 10, 20)
"""Default cut-offs reported by :func:`compute_metrics`."""

NOT_RANKED = np.iinfo(np.int64).max // 2
"""Rank of a target that is absent from a top-K list: a miss for every K.

A large sentinel rather than the list length K, so that a target missing from a top-10 list can
never count as a hit at K = 20. Half of the int64 maximum leaves room for ``rank + 2`` without
overflow.
"""


def ranks_from_scores(
    scores: torch.Tensor,
    targets: torch.Tensor | np.ndarray,
    exclude: Sequence[np.ndarray] | None = None,
) -> torch.Tensor:
    """Ranks each row's target among the candidate items by score, with pessimistic ties.

    ``rank = #{candidates j != target : scores[j] >= scores[target]}``, i.e. the items scored
    strictly higher plus every other item with an equal score. Ties count against the target:
    otherwise a constant model (every item scored the same) would rank every target first, and
    heavily tied scores (e.g. a model that outputs -inf for most items) would inflate metrics.

    Candidates are items 1..N; column 0 (padding) never counts. When ``exclude`` is given, the
    row's listed items (e.g. its history) are removed from the candidates, except the target.

    Args:
        scores: float tensor [B, N + 1]; column 0 is ignored.
        targets: int [B], target item index of each row, in 1..N.
        exclude: optional length-B sequence of int arrays, items to remove from each row's
            candidates (0 and the target are allowed and have no effect).

    Returns:
        LongTensor [B] of 0-based ranks, on ``scores.device``.

    Raises:
        ValueError: on bad shapes, targets outside 1..N, excluded items outside 0..N, or NaN
            scores among the candidates.
    """
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"scores must have shape [B, N + 1] with N >= 1, got {tuple(scores.shape)}")
    num_rows, num_cols = scores.shape
    targets = _check_targets(targets, num_rows, num_cols - 1, scores.device)
    _check_no_nan(scores[:, 1:])
    others = torch.ones_like(scores, dtype=torch.bool)  # candidates other than the target
    others[:, 0] = False
    if exclude is not None:
        rows, items = _exclusion_index(exclude, num_rows, num_cols - 1)
        rows, items = (torch.from_numpy(index).to(scores.device) for index in (rows, items))
        others[rows, items] = False
    others[torch.arange(num_rows, device=scores.device), targets] = False
    target_scores = scores.gather(1, targets[:, None])
    return ((scores >= target_scores) & others).sum(dim=1)


def ranks_from_ranked_lists(
    ranked: torch.Tensor | np.ndarray, targets: torch.Tensor | np.ndarray
) -> torch.Tensor:
    """Position of each row's target in a ranked list of item ids, or ``NOT_RANKED``.

    ``rank = min{i : ranked[i] == target}``, or ``NOT_RANKED`` if the target is not in the list.

    Args:
        ranked: int [B, K], item ids best first (e.g. the beams of a generative model).
        targets: int [B], target item index of each row.

    Returns:
        LongTensor [B] of 0-based ranks, on ``ranked``'s device (CPU for numpy input).

    Raises:
        ValueError: if ``ranked`` is not 2-D or its row count differs from ``targets``.
    """
    ranked = torch.as_tensor(ranked)
    if ranked.ndim != 2:
        raise ValueError(f"ranked must have shape [B, K], got {tuple(ranked.shape)}")
    targets = torch.as_tensor(targets, dtype=torch.long, device=ranked.device)
    if targets.shape != (ranked.shape[0],):
        raise ValueError(f"targets must have shape [{ranked.shape[0]}], got {tuple(targets.shape)}")
    hits = ranked == targets[:, None]
    first_hit = hits.long().argmax(dim=1)
    return torch.where(hits.any(dim=1), first_hit, torch.full_like(first_hit, NOT_RANKED))


def recall_at_k(ranks: torch.Tensor | np.ndarray, k: int) -> float:
    """Recall@K (= Hit Ratio@K with one target per row).

    ``Recall@K = mean_u [rank_u < K]``.

    Args:
        ranks: int [B], 0-based ranks (``NOT_RANKED`` for absent targets).
        k: cut-off, >= 1.

    Returns:
        The mean over rows, as a Python float.
    """
    ranks = _as_ranks(ranks)
    return float(np.mean(ranks < _check_k(k)))


def ndcg_at_k(ranks: torch.Tensor | np.ndarray, k: int) -> float:
    """NDCG@K with one relevant item per row (the ideal DCG is 1).

    ``NDCG@K = mean_u (1 / log2(rank_u + 2) if rank_u < K else 0)``.

    Args:
        ranks: int [B], 0-based ranks (``NOT_RANKED`` for absent targets).
        k: cut-off, >= 1.

    Returns:
        The mean over rows, as a Python float.
    """
    ranks = _as_ranks(ranks)
    hit = ranks < _check_k(k)
    gains = np.zeros(len(ranks))
    gains[hit] = 1.0 / np.log2(ranks[hit] + 2.0)
    return float(gains.mean())


def mrr_at_k(ranks: torch.Tensor | np.ndarray, k: int) -> float:
    """Mean reciprocal rank truncated at K.

    ``MRR@K = mean_u (1 / (rank_u + 1) if rank_u < K else 0)``.

    Args:
        ranks: int [B], 0-based ranks (``NOT_RANKED`` for absent targets).
        k: cut-off, >= 1.

    Returns:
        The mean over rows, as a Python float.
    """
    ranks = _as_ranks(ranks)
    hit = ranks < _check_k(k)
    gains = np.zeros(len(ranks))
    gains[hit] = 1.0 / (ranks[hit] + 1.0)
    return float(gains.mean())


METRICS = {"recall": recall_at_k, "ndcg": ndcg_at_k, "mrr": mrr_at_k}


def compute_metrics(ranks: torch.Tensor | np.ndarray, ks: Sequence[int] = KS) -> dict[str, float]:
    """Every metric of :data:`METRICS` at every cut-off.

    Args:
        ranks: int [B], 0-based ranks (``NOT_RANKED`` for absent targets).
        ks: cut-offs, each >= 1.

    Returns:
        ``{"recall@1": ..., "recall@5": ..., "ndcg@1": ..., ..., "mrr@20": ...}``, ordered by
        metric then cut-off, values Python floats.
    """
    ranks = _as_ranks(ranks)
    return {f"{name}@{k}": fn(ranks, k) for name, fn in METRICS.items() for k in ks}


def list_health(lists: Sequence[torch.Tensor]) -> dict[str, float]:
    """``valid_item_rate`` and ``duplicate_rate`` of ranked lists of item indices.

    ``valid_item_rate`` = share of list entries that are catalogue items (index > 0; -1 marks an
    entry a generative model could not fill); ``duplicate_rate`` = share of entries that repeat an
    earlier entry of the same list.

    Args:
        lists: LongTensors [b, K] of item indices, best first (several batches).
    """
    items = torch.cat([torch.as_tensor(x) for x in lists]) if lists else torch.zeros(0, 1, dtype=torch.long)
    valid = items > 0
    ordered, _ = items.sort(dim=1)
    repeats = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] > 0)
    total = max(items.numel(), 1)
    return {"valid_item_rate": float(valid.sum()) / total, "duplicate_rate": float(repeats.sum()) / total}


def _as_ranks(ranks: torch.Tensor | np.ndarray) -> np.ndarray:
    """Ranks as a non-empty 1-D int64 numpy array; raises ValueError otherwise."""
    if isinstance(ranks, torch.Tensor):
        ranks = ranks.detach().cpu().numpy()
    ranks = np.asarray(ranks)
    if ranks.ndim != 1 or not np.issubdtype(ranks.dtype, np.integer):
        raise ValueError(
            f"ranks must be a 1-D integer array, got shape {ranks.shape} and dtype {ranks.dtype}"
        )
    if ranks.size == 0:
        raise ValueError("ranks is empty: there are no rows to average a metric over")
    if ranks.min() < 0:
        raise ValueError(f"ranks must be >= 0 (0 = target first), got {int(ranks.min())}")
    return ranks.astype(np.int64, copy=False)


def _check_k(k: int) -> int:
    """The cut-off as an int; raises ValueError unless it is a positive integer."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"cut-off k must be a positive integer, got {k!r}")
    return int(k)


def _check_targets(
    targets: torch.Tensor | np.ndarray, num_rows: int, num_items: int, device: torch.device
) -> torch.Tensor:
    """Targets as a LongTensor [B] on ``device``; raises ValueError unless in 1..N."""
    targets = torch.as_tensor(targets, dtype=torch.long, device=device)
    if targets.shape != (num_rows,):
        raise ValueError(f"targets must have shape [{num_rows}], got {tuple(targets.shape)}")
    if num_rows and (targets.min() < 1 or targets.max() > num_items):
        raise ValueError(
            f"targets must be item indices in 1..{num_items} (0 is padding), "
            f"got values in {int(targets.min())}..{int(targets.max())}"
        )
    return targets


def _check_no_nan(scores: torch.Tensor) -> None:
    """Raises ValueError naming how many rows of ``scores`` [B, N] hold a NaN."""
    nan_rows = torch.isnan(scores).any(dim=1)
    if nan_rows.any():
        first = int(nan_rows.nonzero()[0])
        raise ValueError(
            f"scores contain NaN in {int(nan_rows.sum())} of {len(scores)} rows (first: row {first}); "
            "NaN cannot be ranked, check the model for a diverged loss or an invalid mask"
        )


def _exclusion_index(
    exclude: Sequence[np.ndarray], num_rows: int, num_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """Flat (row, item) index arrays of every excluded item, for one scatter into a mask."""
    if len(exclude) != num_rows:
        raise ValueError(f"exclude must hold one item array per row ({num_rows}), got {len(exclude)}")
    items = [np.asarray(row, dtype=np.int64).reshape(-1) for row in exclude]
    rows = np.repeat(np.arange(num_rows), [len(row) for row in items])
    items = np.concatenate(items) if items else np.zeros(0, dtype=np.int64)
    if items.size and (items.min() < 0 or items.max() > num_items):
        raise ValueError(
            f"excluded items must be in 0..{num_items}, got values in {int(items.min())}..{int(items.max())}"
        )
    return rows, items
