"""Hand-computed checks of genrec.evaluation.metrics (ranks are 0-based, one target per row)."""
import math

import numpy as np
import pytest
import torch

from genrec.evaluation import (
    KS,
    NOT_RANKED,
    compute_metrics,
    mrr_at_k,
    ndcg_at_k,
    ranks_from_ranked_lists,
    ranks_from_scores,
    recall_at_k,
)

RANKS = np.array([0, 2, 9, 30])


def test_recall_counts_ranks_below_k():
    assert recall_at_k(RANKS, 1) == 0.25  # only rank 0 < 1
    assert recall_at_k(RANKS, 5) == 0.5  # ranks 0, 2
    assert recall_at_k(RANKS, 10) == 0.75  # ranks 0, 2, 9
    assert recall_at_k(RANKS, 31) == 1.0  # rank 30 < 31


def test_ndcg_discounts_by_log2_of_rank_plus_two():
    # rank 0 -> 1/log2(2) = 1; rank 2 -> 1/log2(4) = 0.5; rank 9 -> 1/log2(11); rank 30 is a miss.
    assert ndcg_at_k(RANKS, 10) == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(11)) / 4)
    assert ndcg_at_k(RANKS, 5) == pytest.approx((1 + 0.5) / 4)
    assert ndcg_at_k(RANKS, 1) == 0.25


def test_mrr_is_reciprocal_of_rank_plus_one():
    assert mrr_at_k(RANKS, 10) == pytest.approx((1 + 1 / 3 + 1 / 10) / 4)  # ranks 0, 2, 9 -> 1/1, 1/3, 1/10
    assert mrr_at_k(RANKS, 3) == pytest.approx((1 + 1 / 3) / 4)
    assert mrr_at_k(RANKS, 1) == 0.25


def test_compute_metrics_keys_ordered_by_metric_then_k():
    metrics = compute_metrics(RANKS)
    assert list(metrics) == [f"{name}@{k}" for name in ("recall", "ndcg", "mrr") for k in KS]
    assert all(type(value) is float for value in metrics.values())
    assert metrics["recall@20"] == 0.75  # rank 30 is still a miss at 20
    assert metrics["ndcg@10"] == ndcg_at_k(RANKS, 10)
    assert compute_metrics(RANKS, ks=(2,)) == {"recall@2": 0.25, "ndcg@2": 0.25, "mrr@2": 0.25}


def test_not_ranked_is_a_miss_for_every_k():
    ranks = np.array([0, NOT_RANKED])
    for k in (1, 20, 10**6):
        assert recall_at_k(ranks, k) == 0.5
        assert ndcg_at_k(ranks, k) == 0.5
        assert mrr_at_k(ranks, k) == 0.5


def test_torch_and_numpy_inputs_agree():
    assert compute_metrics(torch.tensor(RANKS)) == compute_metrics(RANKS)
    assert compute_metrics(RANKS.astype(np.int32)) == compute_metrics(RANKS)


@pytest.mark.parametrize(
    "ranks, k, message",
    [
        (np.array([], dtype=np.int64), 1, "empty"),
        (np.array([0, -1]), 1, ">= 0"),
        (np.array([0.0, 1.0]), 1, "integer"),
        (np.array([[0, 1]]), 1, "1-D"),
        (RANKS, 0, "positive"),
    ],
)
def test_invalid_input_raises(ranks, k, message):
    with pytest.raises(ValueError, match=message):
        recall_at_k(ranks, k)


# Scores over N = 4 items; column 0 is padding with the highest score, which must never count.
SCORES = torch.tensor([[9.0, 0.1, 0.5, 0.3, 0.5]])


@pytest.mark.parametrize(
    "target, rank",
    [
        (3, 2),  # 0.3: items 2 and 4 (0.5) score higher
        (2, 1),  # 0.5: nothing higher, item 4 ties -> counted against the target
        (4, 1),  # symmetric tie with item 2
        (1, 3),  # 0.1: items 2, 3, 4 higher
    ],
)
def test_ranks_from_scores_counts_higher_and_tied_items(target, rank):
    assert ranks_from_scores(SCORES, torch.tensor([target])).tolist() == [rank]


def test_constant_scores_rank_every_target_last():
    scores = torch.zeros(3, 6)  # N = 5 items, all tied
    assert ranks_from_scores(scores, torch.tensor([1, 3, 5])).tolist() == [4, 4, 4]  # N - 1 others


def test_exclusion_removes_history_but_never_the_target():
    targets = torch.tensor([3, 3, 3])
    exclude = [
        np.array([2]),  # 0.3 vs {4 (0.5)} -> rank 1
        np.array([2, 3, 0]),  # the target 3 and padding 0 in the history change nothing -> rank 1
        np.array([], dtype=np.int64),  # nothing excluded -> rank 2 as above
    ]
    assert ranks_from_scores(SCORES.expand(3, -1), targets, exclude).tolist() == [1, 1, 2]


def test_ranks_from_scores_accepts_numpy_targets():
    assert ranks_from_scores(SCORES, np.array([3])).tolist() == [2]


def test_nan_scores_raise_with_row_count():
    scores = torch.tensor([[0.0, 0.1, 0.2], [0.0, float("nan"), 0.2]])
    with pytest.raises(ValueError, match="1 of 2 rows"):
        ranks_from_scores(scores, torch.tensor([1, 2]))


def test_nan_in_padding_column_is_ignored():
    scores = torch.tensor([[float("nan"), 0.1, 0.2]])
    assert ranks_from_scores(scores, torch.tensor([1])).tolist() == [1]


@pytest.mark.parametrize(
    "targets, exclude, message",
    [
        (torch.tensor([0]), None, "1..4"),  # padding is never a target
        (torch.tensor([5]), None, "1..4"),
        (torch.tensor([1, 2]), None, "shape"),
        (torch.tensor([1]), [np.array([7])], "0..4"),
        (torch.tensor([1]), [np.array([1]), np.array([2])], "one item array per row"),
    ],
)
def test_ranks_from_scores_rejects_bad_targets_and_exclusions(targets, exclude, message):
    with pytest.raises(ValueError, match=message):
        ranks_from_scores(SCORES, targets, exclude)


def test_ranks_from_ranked_lists_finds_first_position_or_not_ranked():
    ranked = [[5, 3, 7], [1, 2, 4], [9, 9, 8]]
    targets = [3, 6, 8]  # position 1; absent; position 2
    expected = [1, NOT_RANKED, 2]
    assert ranks_from_ranked_lists(torch.tensor(ranked), torch.tensor(targets)).tolist() == expected
    assert ranks_from_ranked_lists(np.array(ranked), np.array(targets)).tolist() == expected


def test_target_absent_from_a_short_list_misses_at_larger_k():
    ranks = ranks_from_ranked_lists(torch.tensor([[1, 2], [3, 4]]), torch.tensor([2, 5]))  # [1, NOT_RANKED]
    assert recall_at_k(ranks, 20) == 0.5  # the absent target is not a hit at K = 20 > list length


def test_ranks_from_ranked_lists_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\[B, K\]"):
        ranks_from_ranked_lists(torch.tensor([1, 2]), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="targets"):
        ranks_from_ranked_lists(torch.tensor([[1, 2]]), torch.tensor([1, 2]))
