"""Making every item's code tuple unique, and measuring codebook health.

An RQ-VAE can give two items the same tuple: always for items with identical text (ml-100k has 18
pairs of exact duplicates), sometimes for merely similar ones. A generative recommender must map
a generated tuple back to one item, so every item needs its own. Two strategies:

* ``append_level`` (TIGER): one extra level holding the item's rank among the items that share
  its tuple (0, 1, 2, ... in item order). Every item gets the extra code, 0 when its tuple was
  already unique, so all tuples keep one length; the extra level's size is the largest group.
* ``sinkhorn`` (LC-Rec): keep C semantic levels and move colliding items to other codes of the
  last level. Within a group of items sharing the first C-1 codes, the member of each colliding
  set that is closest to the shared code keeps it; the others are matched to the codes nobody in
  the group uses, by a Sinkhorn plan over their distances (balanced, so they spread out) read
  greedily into a one-to-one assignment (:func:`balanced_matching`). A group larger than the last
  codebook cannot be resolved this way: the error says so and names ``append_level``.

After either strategy, uniqueness is asserted.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from genrec.semantic_ids.sinkhorn import sinkhorn_plan

__all__ = ["STRATEGIES", "resolve_collisions", "append_level", "sinkhorn_last_level", "balanced_matching",
           "collision_rate", "max_collision_group", "codebook_usage", "codebook_perplexity", "shared_field_ratio"]

STRATEGIES = ("append_level", "sinkhorn")


def _groups(codes: np.ndarray) -> np.ndarray:
    """Group id per row: rows with identical tuples share an id (ids 0..G-1)."""
    return np.unique(codes, axis=0, return_inverse=True)[1].reshape(-1)


def collision_rate(codes: np.ndarray) -> float:
    """(N - number of distinct tuples) / N for codes [N, C]: 0 when every tuple is unique."""
    return float(1.0 - len(np.unique(codes, axis=0)) / len(codes)) if len(codes) else 0.0


def max_collision_group(codes: np.ndarray) -> int:
    """Largest number of items sharing one tuple (1 when all are unique)."""
    return int(np.bincount(_groups(codes)).max()) if len(codes) else 0


def codebook_usage(codes: np.ndarray, codebook_sizes: list[int]) -> list[float]:
    """Per level, the fraction of the V codes that at least one item uses."""
    return [len(np.unique(codes[:, level])) / size for level, size in enumerate(codebook_sizes)]


def codebook_perplexity(codes: np.ndarray, codebook_sizes: list[int]) -> list[float]:
    """Per level, exp(entropy) of the code distribution over items: V for uniform use, 1 for collapse."""
    out = []
    for level, size in enumerate(codebook_sizes):
        p = np.bincount(codes[:, level], minlength=size) / len(codes)
        p = p[p > 0]
        out.append(float(np.exp(-(p * np.log(p)).sum())))
    return out


def shared_field_ratio(first_codes: np.ndarray, labels: list[set[str]]) -> float | None:
    """How much more often two items with the same first code share a label than two random items.

    P(share a label | same first code) / P(share a label), over unordered pairs of distinct items;
    > 1 means the first level carries the meaning of the labels (e.g. genres). ``None`` when no
    pair shares a first code or no item has labels.
    """
    vocabulary = sorted(set().union(*labels))
    if not vocabulary:
        return None
    index = {label: j for j, label in enumerate(vocabulary)}
    onehot = np.zeros((len(labels), len(vocabulary)), dtype=np.float32)
    for i, item_labels in enumerate(labels):
        onehot[i, [index[label] for label in item_labels]] = 1.0
    share = (onehot @ onehot.T) > 0  # [N, N]
    n = len(labels)
    random_rate = (share.sum() - np.trace(share)) / (n * (n - 1))
    same = first_codes[:, None] == first_codes[None, :]
    np.fill_diagonal(same, False)
    if not same.any() or random_rate == 0:
        return None
    return float(share[same].mean() / random_rate)


def append_level(codes: np.ndarray) -> tuple[np.ndarray, int]:
    """TIGER's disambiguation: codes [N, C] -> [N, C+1] and the size of the extra level."""
    groups = _groups(codes)
    rank = np.zeros(len(codes), dtype=np.int64)
    seen: dict[int, int] = defaultdict(int)
    for row, group in enumerate(groups):  # item order decides the rank within a group
        rank[row] = seen[group]
        seen[group] += 1
    return np.concatenate([codes, rank[:, None]], axis=1), int(rank.max()) + 1


def balanced_matching(cost: torch.Tensor, epsilon: float = 0.003, iterations: int = 50) -> np.ndarray:
    """One distinct column per row of ``cost`` [R, K] (R <= K): the Sinkhorn plan read greedily.

    Pairs are taken in decreasing plan value, skipping rows and columns already taken, so the
    result is a one-to-one assignment that follows the balanced plan. Deterministic.
    """
    rows, cols = cost.shape
    if rows > cols:
        raise ValueError(f"cannot give {rows} items distinct codes among {cols}")
    plan = sinkhorn_plan(cost, epsilon, iterations).numpy()
    order = np.argsort(-plan, axis=None, kind="stable")
    assigned = np.full(rows, -1, dtype=np.int64)
    taken = np.zeros(cols, dtype=bool)
    for flat in order:
        row, col = divmod(int(flat), cols)
        if assigned[row] < 0 and not taken[col]:
            assigned[row], taken[col] = col, True
            if (assigned >= 0).all():
                break
    return assigned


def sinkhorn_last_level(codes: np.ndarray, last_distances: np.ndarray, epsilon: float = 0.003,
                        iterations: int = 50) -> np.ndarray:
    """LC-Rec-style resolution on the last level (see the module docstring).

    Args:
        codes: [N, C] nearest-code tuples.
        last_distances: [N, V] distance of each item's last-level residual to every last-level code.

    Returns:
        [N, C] unique tuples; only last-level codes of colliding items change.
    """
    codes = codes.copy()
    size = last_distances.shape[1]
    prefixes = _groups(codes[:, :-1]) if codes.shape[1] > 1 else np.zeros(len(codes), dtype=np.int64)
    full = _groups(codes)
    for prefix in np.unique(prefixes[np.bincount(full)[full] > 1]):
        members = np.flatnonzero(prefixes == prefix)
        if len(members) > size:
            raise ValueError(f"{len(members)} items share the code prefix {codes[members[0], :-1].tolist()}, more "
                             f"than the {size} codes of the last level, so the 'sinkhorn' collision strategy cannot "
                             "make them unique; use collision_strategy = 'append_level' or a larger last codebook")
        keep, movers = [], []
        for code in np.unique(codes[members, -1]):
            holders = members[codes[members, -1] == code]
            best = holders[np.argmin(last_distances[holders, code])]
            keep.append(best)
            movers += [item for item in holders if item != best]
        free = np.setdiff1d(np.arange(size), codes[keep, -1])
        cost = torch.from_numpy(last_distances[np.ix_(movers, free)].astype(np.float32))
        codes[movers, -1] = free[balanced_matching(cost, epsilon, iterations)]
    return codes


def resolve_collisions(codes: np.ndarray, codebook_sizes: list[int], strategy: str,
                       last_distances: np.ndarray | None = None) -> tuple[np.ndarray, list[int]]:
    """Unique tuples with the named strategy; returns (codes, codebook sizes per level).

    Raises:
        ValueError: unknown strategy, missing distances for ``sinkhorn``, or tuples still not unique.
    """
    if strategy == "append_level":
        codes, extra = append_level(codes)
        sizes = [*codebook_sizes, extra]
    elif strategy == "sinkhorn":
        if last_distances is None:
            raise ValueError("the 'sinkhorn' collision strategy needs the last level's distances")
        codes, sizes = sinkhorn_last_level(codes, last_distances), list(codebook_sizes)
    else:
        raise ValueError(f"unknown collision strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    if collision_rate(codes) > 0:
        raise AssertionError(f"collision strategy {strategy!r} left {max_collision_group(codes)} items on one tuple")
    return codes, sizes
