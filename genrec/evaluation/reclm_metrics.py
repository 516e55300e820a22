"""RecLM-gen's list metrics and per-position reward (Lu et al., ACL 2024, arXiv 2403.05063; RecAI).

An answer is a list of items parsed from generated text; an entry that names no catalogue item is
-1. The definitions follow RecLM-gen's ``Metrics.add_sample`` and ``RewardModel.reward_calculate``:
each *Rate* is a **count per answer** over the first ``n`` entries (``n`` = the number of items the
instruction asked for), averaged over answers, not a share; divide by ``n`` for a share.

For one answer ``out`` (entries ``out[0..]``), requested count ``n``, history ``H``, target ``t``,
category item set ``G``; ``top = out[:n]``:

* ``NonExistRate = #{i < n : top[i] = -1}`` (not a catalogue item);
* ``RepeatRate = #{i : top[i] in top[:i]}`` (a repeat of an earlier entry; repeated -1s count too,
  as in RecLM-gen, which compares titles);
* ``InHistoryRate = #{i : top[i] in H}``;
* ``CorrectCount = 1 if len(out) == n else 0`` (the answer has exactly the requested length);
* ``TargetCategoryRate = #{i : top[i] in G}``;
* ``CategoryRateCorrect`` for "at least / exactly / at most m of n in G":
  at least: ``TCR >= m``; exactly: ``|TCR - m| <= 1``; at most: ``TCR + NonExistRate <= m``;
* ``Recall = 1 if t in top``; ``MRR = 1/(r+1)``; ``NDCG = 1/log2(r+2)`` with r the 0-based position of t.

Per-position reward (RecLM-gen's ``rank_score``; rules checked in this order, first match wins) for
entry ``i`` with teacher rank ``k_i`` (0-based rank of the item in the teacher's full ranking):

* ``-1`` if ``i >= n`` (beyond the requested count), the entry is not a catalogue item, repeats an
  earlier entry, or is in the history;
* ``+1`` if it is the target;
* ``1 / log2(k_i + 3)`` otherwise (RecLM-gen's ``ranking_score_func(k + 1)``).

List reward (RecLM-gen, sequential tasks): ``alpha * sum_i c_i / best(n) + (1 - alpha) * ndcg_t``,
where ``c_i = -1`` for a penalised entry and ``r_i / log2(i + 2)`` otherwise (RecLM-gen's
``rank_corrected_score``), ``best(n) = sum_{i<n} 1 / log2(i + 2)^2`` and ``ndcg_t = 1 / log2(r + 2)``
when the target is at position r, else 0.

All functions are pure Python over lists of ints.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence

__all__ = ["ANSWER_METRICS", "answer_metrics", "category_rate_correct", "list_reward", "mean_metrics",
           "position_rewards"]

ANSWER_METRICS = ("NonExistRate", "RepeatRate", "InHistoryRate", "CorrectCount", "Recall", "MRR", "NDCG")
PROPORTIONS = ("at_least", "exactly", "at_most")


def answer_metrics(output: Sequence[int], item_count: int, history: Collection[int], target: int | None = None,
                   category_items: Collection[int] | None = None) -> dict[str, float]:
    """RecLM-gen's metrics of one answer (see the module docstring).

    Args:
        output: the answer's item indices in order; -1 for an entry that names no catalogue item.
        item_count: n, how many items the instruction asked for (>= 1).
        history: the user's history items.
        target: the ground-truth next item (``None``: no Recall/MRR/NDCG).
        category_items: the items of the instruction's category (``None``: no TargetCategoryRate).
    """
    if item_count < 1:
        raise ValueError(f"item_count must be >= 1, got {item_count}")
    top = list(output[:item_count])
    history = set(history)
    metrics = {
        "NonExistRate": float(sum(1 for item in top if item < 0)),
        "RepeatRate": float(sum(1 for i, item in enumerate(top) if item in top[:i])),
        "InHistoryRate": float(sum(1 for item in top if item >= 0 and item in history)),
        "CorrectCount": 1.0 if len(output) == item_count else 0.0,
    }
    if target is not None:
        r = top.index(target) if target in top else None
        metrics.update(Recall=0.0 if r is None else 1.0, MRR=0.0 if r is None else 1.0 / (r + 1),
                       NDCG=0.0 if r is None else 1.0 / math.log2(r + 2))
    if category_items is not None:
        metrics["TargetCategoryRate"] = float(sum(1 for item in top if item >= 0 and item in category_items))
    return metrics


def category_rate_correct(target_category_rate: float, non_exist_rate: float, proportion: str, m: int) -> float:
    """1.0 if an answer meets "at least / exactly / at most m in the category" as RecLM-gen scores it, else 0.0."""
    if proportion == "at_least":
        return float(target_category_rate >= m)
    if proportion == "exactly":
        return float(abs(target_category_rate - m) <= 1)
    if proportion == "at_most":
        return float(target_category_rate + non_exist_rate <= m)
    raise ValueError(f"unknown proportion {proportion!r}; use one of {', '.join(PROPORTIONS)}")


def position_rewards(output: Sequence[int], item_count: int, history: Collection[int], target: int,
                     teacher_rank: Callable[[int], int] | Mapping[int, int]) -> list[float]:
    """RecLM-gen's per-position reward of every entry of an answer (module docstring).

    Args:
        output: item indices of the answer (-1: not a catalogue item); every entry gets a reward.
        item_count: n requested.
        history: the user's history items.
        target: the ground-truth next item.
        teacher_rank: item -> its 0-based rank in the teacher's ranking for this user (a mapping
            or a callable).
    """
    rank = teacher_rank if callable(teacher_rank) else teacher_rank.__getitem__
    history = set(history)
    rewards = []
    for i, item in enumerate(output):
        if i >= item_count or item < 0 or item in output[:i] or item in history:
            rewards.append(-1.0)
        elif item == target:
            rewards.append(1.0)
        else:
            rewards.append(1.0 / math.log2(rank(item) + 3))
    return rewards


def list_reward(rewards: Sequence[float], output: Sequence[int], item_count: int, target: int,
                alpha: float = 0.5) -> float:
    """RecLM-gen's list reward of a sequential answer from its per-position ``rewards`` (module docstring)."""
    best = sum(1.0 / math.log2(i + 2) ** 2 for i in range(item_count))
    ranking = sum(r if r == -1.0 else r / math.log2(i + 2) for i, r in enumerate(rewards)) / best
    task = 1.0 / math.log2(list(output).index(target) + 2) if target in output else 0.0
    return alpha * ranking + (1 - alpha) * task


def mean_metrics(per_answer: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The mean of each metric over the answers that have it (RecLM-gen divides sums by the answer count)."""
    keys = sorted({key for metrics in per_answer for key in metrics})
    out = {}
    for key in keys:
        values = [m[key] for m in per_answer if key in m]
        out[key] = sum(values) / len(values)
    return out
