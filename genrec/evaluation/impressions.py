"""Impression metrics for click prediction (MIND): AUC, MRR, nDCG@K per impression, GAUC per user.

An impression is the list of news shown to a user at one time, each with a click label (1) or not
(0); a model scores every candidate. The MIND protocol (Wu et al., ACL 2020; the competition's
``evaluate.py``) computes each metric **per impression** and averages over impressions:

- ``AUC``: ROC-AUC of the impression's scores against its labels, as ``sklearn.metrics.roc_auc_score``
  computes it: the probability that a clicked candidate outscores a non-clicked one, ties counting
  one half (Mann-Whitney U / (n_pos * n_neg), with average ranks for ties).
- ``MRR``: ``sum over clicked candidates of 1 / rank / number of clicked`` (MIND's ``mrr_score``;
  not the reciprocal rank of the first click, and not LRAP: Legommenders issue #19).
- ``nDCG@K``: binary gains, ``DCG@K = sum_{clicked, rank <= K} 1 / log2(rank + 1)`` divided by the
  DCG@K of the ideal order (all clicks first) (MIND's ``ndcg_score``).

Ranks are 1-based. MIND's scorer orders candidates with ``np.argsort``, which breaks score ties
arbitrarily; here ties are broken **pessimistically and deterministically**: among equal scores,
non-clicked candidates come first. A constant scorer therefore ranks every click last and cannot
inflate MRR or nDCG (the convention of :mod:`genrec.evaluation.metrics`); with distinct scores the
result equals MIND's. AUC needs no tie rule: ties count one half, as in sklearn.

Undefined cases, skipped and counted rather than failing (the MIND scorer would raise or return
NaN on them): an impression whose candidates are all clicked or all non-clicked has no AUC; an
impression with no click has no MRR or nDCG (an all-clicked impression has both, e.g. MRR of three
clicks = (1 + 1/2 + 1/3) / 3). :func:`evaluate_impressions` reports how many impressions each mean
covers.

``GAUC`` (optional, per user) is the impression-weighted group AUC of DIN (Zhou et al., KDD 2018,
"Deep Interest Network for Click-Through Rate Prediction", section Metrics, after Zhu et al.,
KDD 2017, "Optimized Cost per Click in Taobao Display Advertising"):
``GAUC = sum_u w_u AUC_u / sum_u w_u``, where ``AUC_u`` is the AUC over all candidates shown to user
``u`` (its impressions pooled) and ``w_u`` is the number of those candidates (DIN's "number of
impressions" counts displayed items). Users whose pooled labels are all one class are skipped. This
differs from Legommenders' GAUC, an unweighted mean of per-user AUCs, and it is not comparable with
per-impression AUC.

Inputs are ragged: ``labels[i]`` and ``scores[i]`` are the C_i labels (0/1) and float scores of
impression i. Internally they are flattened to R = sum C_i rows with a group id per row, sorted
once with ``np.lexsort``, and reduced with ``np.bincount``: no Python loop over impressions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["IMPRESSION_KS", "evaluate_impressions", "impression_auc", "impression_mrr", "impression_ndcg",
           "user_gauc"]

IMPRESSION_KS = (5, 10)
"""nDCG cut-offs reported by :func:`evaluate_impressions` (those of the MIND leaderboard)."""


def impression_auc(labels: Sequence[np.ndarray], scores: Sequence[np.ndarray]) -> np.ndarray:
    """ROC-AUC of each impression; NaN where all candidates share one label.

    ``AUC_i = (sum of the average ascending ranks of the clicked - P (P + 1) / 2) / (P N)`` with P
    clicked and N non-clicked candidates: ties count one half (sklearn's ``roc_auc_score``).

    Args:
        labels: I int arrays [C_i] of 0/1 click labels.
        scores: I float arrays [C_i] of model scores.

    Returns:
        float64 [I].
    """
    flat = _Flat(labels, scores)
    return _group_auc(flat.labels, flat.scores, flat.groups, flat.num_groups)


def impression_mrr(labels: Sequence[np.ndarray], scores: Sequence[np.ndarray]) -> np.ndarray:
    """MIND's MRR of each impression; NaN where nothing was clicked.

    ``MRR_i = (1 / P) sum_{clicked c} 1 / rank(c)``, 1-based ranks by descending score, ties
    broken with non-clicked candidates first.

    Args:
        labels: I int arrays [C_i] of 0/1 click labels.
        scores: I float arrays [C_i] of model scores.

    Returns:
        float64 [I].
    """
    flat = _Flat(labels, scores)
    clicked = flat.clicked()
    reciprocal = np.bincount(flat.groups, weights=flat.labels / flat.ranks(), minlength=flat.num_groups)
    return np.divide(reciprocal, clicked, out=np.full(flat.num_groups, np.nan), where=clicked > 0)


def impression_ndcg(labels: Sequence[np.ndarray], scores: Sequence[np.ndarray], k: int) -> np.ndarray:
    """nDCG@K of each impression with binary gains; NaN where nothing was clicked.

    ``nDCG@K_i = sum_{clicked c, rank(c) <= K} 1 / log2(rank(c) + 1) / sum_{r=1}^{min(P, K)} 1 / log2(r + 1)``,
    1-based ranks by descending score, ties broken with non-clicked candidates first.

    Args:
        labels: I int arrays [C_i] of 0/1 click labels.
        scores: I float arrays [C_i] of model scores.
        k: cut-off, >= 1.

    Returns:
        float64 [I].
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"cut-off k must be a positive integer, got {k!r}")
    flat = _Flat(labels, scores)
    ranks, clicked = flat.ranks(), flat.clicked()
    gains = np.where((flat.labels == 1) & (ranks <= k), 1.0 / np.log2(ranks + 1.0), 0.0)
    dcg = np.bincount(flat.groups, weights=gains, minlength=flat.num_groups)
    ideal = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(1, k + 1) + 1.0))])  # ideal[p] = IDCG, p clicks
    idcg = ideal[np.minimum(clicked, k).astype(np.int64)]
    return np.divide(dcg, idcg, out=np.full(flat.num_groups, np.nan), where=clicked > 0)


def user_gauc(labels: Sequence[np.ndarray], scores: Sequence[np.ndarray],
              users: Sequence | np.ndarray) -> tuple[float, int]:
    """DIN's GAUC: per-user AUC over the user's pooled candidates, weighted by their count.

    ``GAUC = sum_u w_u AUC_u / sum_u w_u``, ``w_u`` = number of candidates shown to user ``u``
    over all its impressions; users with only clicks or only non-clicks are skipped.

    Args:
        labels: I int arrays [C_i] of 0/1 click labels.
        scores: I float arrays [C_i] of model scores.
        users: [I] user of each impression (any hashable ids, e.g. ``MindBehaviors.users``).

    Returns:
        ``(gauc, number of users averaged)``.

    Raises:
        ValueError: if no user has both a click and a non-click.
    """
    flat = _Flat(labels, scores)
    users = np.asarray(users)
    if users.shape != (flat.num_groups,):
        raise ValueError(f"users must hold one user per impression ({flat.num_groups}), got shape {users.shape}")
    _, user_of_impression = np.unique(users, return_inverse=True)
    user_rows = user_of_impression.reshape(-1)[flat.groups]
    num_users = int(user_of_impression.max()) + 1
    auc = _group_auc(flat.labels, flat.scores, user_rows, num_users)
    weights = np.bincount(user_rows, minlength=num_users).astype(np.float64)
    defined = ~np.isnan(auc)
    if not defined.any():
        raise ValueError("GAUC is undefined: no user has both a clicked and a non-clicked candidate")
    return float(np.sum(auc[defined] * weights[defined]) / np.sum(weights[defined])), int(defined.sum())


def evaluate_impressions(labels: Sequence[np.ndarray], scores: Sequence[np.ndarray],
                         users: Sequence | np.ndarray | None = None,
                         ks: Sequence[int] = IMPRESSION_KS) -> dict[str, float | int]:
    """Per-impression AUC, MRR and nDCG@K averaged over impressions, plus per-user GAUC when ``users`` is given.

    Args:
        labels: I int arrays [C_i] of 0/1 click labels.
        scores: I float arrays [C_i] of model scores (higher = more likely clicked).
        users: optional [I] user of each impression; adds ``gauc`` and ``gauc_users``.
        ks: nDCG cut-offs.

    Returns:
        ``{"auc", "mrr", "ndcg@5", "ndcg@10", ["gauc"]}`` as Python floats, then the counts as ints:
        ``impressions`` (I), ``auc_impressions`` (those with both a click and a non-click, over
        which AUC is averaged), ``clicked_impressions`` (those with a click, over which MRR and
        nDCG are averaged) and ``gauc_users``.

    Raises:
        ValueError: on mismatched or empty inputs, labels other than 0/1, NaN scores, or when no
            impression has a click (MRR, nDCG undefined) or none has both labels (AUC undefined).
    """
    auc = impression_auc(labels, scores)
    mrr = impression_mrr(labels, scores)
    ndcg = {k: impression_ndcg(labels, scores, k) for k in ks}
    clicked, defined_auc = ~np.isnan(mrr), ~np.isnan(auc)
    if not clicked.any():
        raise ValueError(f"no impression has a click among {len(mrr)}: MRR and nDCG are undefined; "
                         "check that the labels are the click labels (1 = clicked)")
    if not defined_auc.any():
        raise ValueError(f"no impression among {len(auc)} has both a clicked and a non-clicked candidate: "
                         "AUC is undefined")
    result: dict[str, float | int] = {"auc": float(auc[defined_auc].mean()), "mrr": float(mrr[clicked].mean())}
    result.update({f"ndcg@{k}": float(values[clicked].mean()) for k, values in ndcg.items()})
    gauc_users = None
    if users is not None:
        result["gauc"], gauc_users = user_gauc(labels, scores, users)
    result.update(impressions=len(auc), auc_impressions=int(defined_auc.sum()), clicked_impressions=int(clicked.sum()))
    if gauc_users is not None:
        result["gauc_users"] = gauc_users
    return result


class _Flat:
    """Ragged impressions flattened to rows: labels, scores, group (impression) id per row [R]."""

    def __init__(self, labels: Sequence[np.ndarray], scores: Sequence[np.ndarray]):
        if len(labels) != len(scores):
            raise ValueError(f"labels hold {len(labels)} impressions, scores {len(scores)}")
        if len(labels) == 0:
            raise ValueError("no impressions to evaluate")
        label_arrays = [np.asarray(row).reshape(-1) for row in labels]
        score_arrays = [np.asarray(row, dtype=np.float64).reshape(-1) for row in scores]
        sizes = np.array([len(row) for row in label_arrays], dtype=np.int64)
        mismatch = np.flatnonzero(sizes != [len(row) for row in score_arrays])
        if mismatch.size:
            i = int(mismatch[0])
            raise ValueError(f"impression {i} has {sizes[i]} labels but {len(score_arrays[i])} scores")
        if (sizes == 0).any():
            raise ValueError(f"impression {int(np.flatnonzero(sizes == 0)[0])} has no candidates")
        self.labels = np.concatenate(label_arrays)
        self.scores = np.concatenate(score_arrays)
        if not np.isin(self.labels, (0, 1)).all():
            raise ValueError(f"labels must be 0 or 1, got {sorted(set(np.unique(self.labels).tolist()) - {0, 1})[:5]}")
        self.labels = self.labels.astype(np.int64)
        if np.isnan(self.scores).any():
            row = int(np.flatnonzero(np.isnan(self.scores))[0])
            impression = int(np.searchsorted(np.cumsum(sizes), row, side="right"))
            raise ValueError(f"scores contain NaN (first in impression {impression}); NaN cannot be ranked, check "
                             "the model for a diverged loss")
        self.num_groups = len(sizes)
        self.groups = np.repeat(np.arange(self.num_groups), sizes)
        self.starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])

    def clicked(self) -> np.ndarray:
        """Number of clicked candidates per impression [I]."""
        return np.bincount(self.groups, weights=self.labels, minlength=self.num_groups)

    def ranks(self) -> np.ndarray:
        """1-based rank of each row within its impression by descending score, non-clicked first among ties."""
        order = np.lexsort((self.labels, -self.scores, self.groups))
        ranks = np.empty(len(order), dtype=np.int64)
        ranks[order] = np.arange(len(order)) - self.starts[self.groups[order]] + 1
        return ranks


def _group_auc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray, num_groups: int) -> np.ndarray:
    """Mann-Whitney AUC per group (ties count one half) [num_groups]; NaN for single-class groups.

    Args:
        labels: int [R] 0/1; scores: float [R]; groups: int [R] in 0..num_groups-1 (any order).
    """
    order = np.lexsort((scores, groups))
    g, s, y = groups[order], scores[order], labels[order]
    new_block = np.ones(len(order), dtype=bool)  # a block is a run of equal (group, score)
    new_block[1:] = (g[1:] != g[:-1]) | (s[1:] != s[:-1])
    first = np.flatnonzero(new_block)
    last = np.append(first[1:], len(order)) - 1
    block = np.cumsum(new_block) - 1
    group_start = np.searchsorted(g, np.arange(num_groups))
    average_rank = (first + last)[block] / 2.0 - group_start[g] + 1.0  # ascending, 1-based, ties averaged
    positives = np.bincount(g, weights=y, minlength=num_groups)
    negatives = np.bincount(g, minlength=num_groups) - positives
    rank_sum = np.bincount(g, weights=average_rank * y, minlength=num_groups)
    defined = (positives > 0) & (negatives > 0)
    return np.divide(rank_sum - positives * (positives + 1) / 2.0, positives * negatives,
                     out=np.full(num_groups, np.nan), where=defined)
