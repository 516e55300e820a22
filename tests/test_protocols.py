"""Checks of genrec.evaluation.protocols: negative sampling, the Evaluator, distributed gathering.

Run as a script (``torchrun --nproc_per_node 2 tests/test_protocols.py OUT_DIR``) this file is the
worker of :func:`test_two_processes_match_one_process`.
"""
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from genrec.evaluation import Evaluator, compute_metrics, evaluate_together, sample_negatives


@dataclass
class EvalSet:
    users: np.ndarray
    histories: list[np.ndarray]
    targets: np.ndarray


def random_eval_set(num_rows: int, num_items: int, seed: int = 0) -> EvalSet:
    """Rows with user index = row, 0-20 random history items (repeats allowed) and a random target."""
    rng = np.random.default_rng(seed)
    histories = [rng.integers(1, num_items + 1, size=rng.integers(0, 21)) for _ in range(num_rows)]
    return EvalSet(np.arange(num_rows), histories, rng.integers(1, num_items + 1, size=num_rows))


def table_score_fn(table: torch.Tensor):
    """score_fn that looks each user's scores up in a fixed table [users, N + 1]."""
    return lambda users, histories: table[torch.as_tensor(users)]


def brute_force_ranks(table: np.ndarray, eval_set: EvalSet, mask_history: bool) -> np.ndarray:
    """Pessimistic rank by a Python loop: other candidates scored >= the target."""
    ranks = []
    for user, history, target in zip(eval_set.users, eval_set.histories, eval_set.targets):
        excluded = {0, target} | (set(history.tolist()) if mask_history else set())
        others = [item for item in range(table.shape[1]) if item not in excluded]
        ranks.append(int((table[user, others] >= table[user, target]).sum()))
    return np.array(ranks)


# --- sample_negatives -------------------------------------------------------------------------


def test_negatives_are_distinct_and_outside_history_and_target():
    eval_set = random_eval_set(300, num_items=50)
    negatives = sample_negatives(50, eval_set.histories, eval_set.targets, num_negatives=25, seed=1)
    assert negatives.shape == (300, 25)
    for row, history, target in zip(negatives, eval_set.histories, eval_set.targets):
        assert len(set(row.tolist())) == 25
        assert row.min() >= 1 and row.max() <= 50
        assert not set(row.tolist()) & (set(history.tolist()) | {target})


def test_negatives_are_deterministic_per_seed():
    eval_set = random_eval_set(100, num_items=200)
    draw = lambda seed: sample_negatives(200, eval_set.histories, eval_set.targets, seed=seed)  # noqa: E731
    np.testing.assert_array_equal(draw(3), draw(3))
    assert not np.array_equal(draw(3), draw(4))


def test_negatives_are_uniform_over_eligible_items():
    # 2,000 rows x 10 negatives over the 27 eligible items 4..30: each is drawn 2000 * 10 / 27 = 741 times
    # in expectation (std about 21); the seed is fixed, so the 15 % tolerance cannot flake.
    histories = [np.array([1, 2])] * 2000
    negatives = sample_negatives(30, histories, np.full(2000, 3), num_negatives=10, seed=0)
    counts = np.bincount(negatives.ravel(), minlength=31)
    assert counts[:4].sum() == 0
    np.testing.assert_allclose(counts[4:], 2000 * 10 / 27, rtol=0.15)


def test_negatives_can_take_every_eligible_item():
    # Row 1 has exactly 3 eligible items (N = 6 minus history {1, 2} and target 3): all must be taken.
    negatives = sample_negatives(6, [np.array([4]), np.array([1, 2, 0])], np.array([5, 3]), num_negatives=3)
    assert sorted(negatives[1].tolist()) == [4, 5, 6]


def test_too_few_eligible_items_names_the_row():
    histories = [np.array([1]), np.array([1, 2, 3])]  # row 1: 5 items - 3 - target = 1 eligible
    with pytest.raises(ValueError, match="row 1 has only 1 items"):
        sample_negatives(5, histories, np.array([4, 4]), num_negatives=2)


def test_negatives_reject_items_outside_the_catalogue():
    with pytest.raises(ValueError, match=r"0\.\.5"):
        sample_negatives(5, [np.array([9])], np.array([1]), num_negatives=2)


# --- Evaluator --------------------------------------------------------------------------------


@pytest.mark.parametrize("mask_history", [False, True])
def test_full_protocol_matches_brute_force(mask_history):
    num_items, eval_set = 40, random_eval_set(70, num_items=40)
    # Integer scores in 0..9 make ties frequent, so the pessimistic tie rule is exercised too.
    table = torch.randint(0, 10, (70, num_items + 1), generator=torch.Generator().manual_seed(0)).float()
    evaluator = Evaluator(eval_set, num_items, mask_history=mask_history, batch_size=16)  # 70 = 4 x 16 + 6
    expected = brute_force_ranks(table.numpy(), eval_set, mask_history)
    np.testing.assert_array_equal(evaluator.ranks(table_score_fn(table)), expected)
    assert evaluator(table_score_fn(table)) == compute_metrics(expected)


def test_mask_history_on_a_hand_case():
    # N = 5. Row 0: history [2, 4, 3], target 3 (a repeat) with score 0.5; items 2 (0.9) and 4 (0.8) score
    # higher -> rank 2 unmasked; masking removes 2 and 4 but never the target -> rank 0.
    # Row 1: history [1], target 5 (0.2); items 2, 3, 4 score higher, item 1 (0.1) does not -> rank 3
    # either way.
    eval_set = EvalSet(np.array([0, 1]), [np.array([2, 4, 3]), np.array([1])], np.array([3, 5]))
    table = torch.tensor([[0.0, 0.1, 0.9, 0.5, 0.8, 0.2]] * 2)
    ranks = lambda mask: Evaluator(eval_set, 5, mask_history=mask).ranks(table_score_fn(table))  # noqa: E731
    assert ranks(False).tolist() == [2, 3]
    assert ranks(True).tolist() == [0, 3]


def test_sampled_protocol_ranks_target_among_its_negatives():
    num_items, eval_set = 60, random_eval_set(50, num_items=60)
    table = torch.rand(50, num_items + 1, generator=torch.Generator().manual_seed(0))
    evaluator = Evaluator(eval_set, num_items, protocol="sampled", num_negatives=20, seed=5)
    negatives = sample_negatives(num_items, eval_set.histories, eval_set.targets, 20, seed=5)
    np.testing.assert_array_equal(evaluator.negatives, negatives)
    scores = table.numpy()
    expected = [
        (scores[row, negatives[row]] >= scores[row, eval_set.targets[row]]).sum() for row in range(50)
    ]
    np.testing.assert_array_equal(evaluator.ranks(table_score_fn(table)), expected)


def test_sampled_hit_at_10_of_random_scores_is_10_over_101():
    # With random scores the target's rank among 1 + 100 candidates is uniform on 0..100, so
    # Hit@10 = 10/101 = 0.099 (std over 5,000 rows: 0.004). The seeds are fixed: this cannot flake.
    num_items, eval_set = 500, random_eval_set(5000, num_items=500)
    table = torch.rand(5000, num_items + 1, generator=torch.Generator().manual_seed(0))
    metrics = Evaluator(eval_set, num_items, protocol="sampled", batch_size=1024)(table_score_fn(table))
    assert metrics["recall@10"] == pytest.approx(10 / 101, abs=0.015)
    assert metrics["recall@1"] == pytest.approx(1 / 101, abs=0.005)


def test_evaluate_ranked_on_a_hand_case():
    eval_set = EvalSet(np.array([0, 1, 2]), [np.array([1])] * 3, np.array([3, 6, 8]))
    lists = torch.tensor([[5, 3, 7], [1, 2, 4], [9, 1, 8]])  # targets at positions 1, absent, 2
    metrics = Evaluator(eval_set, 9, ks=(1, 3)).evaluate_ranked(lambda users, histories: lists[users])
    assert metrics["recall@1"] == 0.0
    assert metrics["recall@3"] == pytest.approx(2 / 3)
    assert metrics["mrr@3"] == pytest.approx((1 / 2 + 1 / 3) / 3)  # ranks 1, NOT_RANKED, 2


@pytest.mark.parametrize(
    "options, k, message",
    [
        ({"protocol": "sampled", "num_negatives": 2}, 3, "protocol='full'"),
        ({"mask_history": True}, 3, "mask_history"),
        ({}, 2, "lists of 2 items"),  # ks go up to 3
    ],
)
def test_evaluate_ranked_rejects_what_it_cannot_measure(options, k, message):
    eval_set = EvalSet(np.array([0]), [np.array([1])], np.array([2]))
    evaluator = Evaluator(eval_set, 9, ks=(1, 3), **options)
    with pytest.raises(ValueError, match=message):
        evaluator.evaluate_ranked(lambda users, histories: torch.arange(1, k + 1)[None])


@pytest.mark.parametrize(
    "options, message",
    [
        ({"protocol": "loo"}, "full, sampled"),
        ({"batch_size": 0}, "batch_size"),
        ({"ks": ()}, "ks"),
    ],
)
def test_evaluator_rejects_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        Evaluator(random_eval_set(3, num_items=10), 10, **options)


def test_evaluator_rejects_mismatched_or_empty_sets():
    with pytest.raises(ValueError, match="same length"):
        Evaluator(EvalSet(np.arange(2), [np.array([1])], np.array([1, 2])), 10)
    with pytest.raises(ValueError, match="empty"):
        Evaluator(EvalSet(np.arange(0), [], np.array([], dtype=np.int64)), 10)


def test_score_fn_with_wrong_width_raises():
    evaluator = Evaluator(random_eval_set(3, num_items=10), 10)
    with pytest.raises(ValueError, match=r"\[3, 11\]"):
        evaluator(lambda users, histories: torch.zeros(len(users), 10))


def test_score_fn_runs_under_inference_mode():
    modes = []

    def score_fn(users, histories):
        modes.append(torch.is_inference_mode_enabled())
        return torch.rand(len(users), 11)

    Evaluator(random_eval_set(5, num_items=10), 10, batch_size=2)(score_fn)
    assert modes == [True, True, True]


def test_evaluate_together_scores_once_and_matches_separate_evaluators():
    eval_set = random_eval_set(23, num_items=40)
    table = torch.randint(0, 6, (23, 41), generator=torch.Generator().manual_seed(1)).float()
    calls = []

    def score_fn(users, histories):
        calls.append(len(users))
        return table[torch.as_tensor(users)]

    full = Evaluator(eval_set, 40, batch_size=5, mask_history=True)
    sampled = Evaluator(eval_set, 40, protocol="sampled", num_negatives=10, batch_size=5)
    together = evaluate_together({"full": full, "sampled": sampled}, score_fn)
    assert calls == [5, 5, 5, 5, 3]  # each batch scored once for both protocols
    assert together == {"full": full(score_fn), "sampled": sampled(score_fn)}
    other_rows = Evaluator(random_eval_set(23, num_items=40, seed=2), 40, batch_size=5)
    with pytest.raises(ValueError, match="same rows"):
        evaluate_together({"full": full, "other": other_rows}, score_fn)


# --- distributed ------------------------------------------------------------------------------

DIST_ITEMS, DIST_ROWS = 30, 37  # 37 rows: the two processes hold 19 and 18 rows, so padding is exercised


def _dist_evaluations(accelerator=None) -> dict:
    """Every evaluation the distributed test compares, on a fixed set and fixed tied scores."""
    eval_set = random_eval_set(DIST_ROWS, num_items=DIST_ITEMS)
    generator = torch.Generator().manual_seed(0)
    table = torch.randint(0, 5, (DIST_ROWS, DIST_ITEMS + 1), generator=generator).float()  # many ties
    score_fn = table_score_fn(table)
    full = Evaluator(eval_set, DIST_ITEMS, batch_size=4)
    sampled = Evaluator(eval_set, DIST_ITEMS, protocol="sampled", num_negatives=5, batch_size=4)
    top = table[:, 1:].argsort(dim=1, descending=True, stable=True)[:, :20] + 1
    return {
        "ranks": full.ranks(score_fn, accelerator).tolist(),
        "full": full(score_fn, accelerator),
        "sampled": sampled(score_fn, accelerator),
        "ranked": full.evaluate_ranked(lambda users, histories: top[users], accelerator),
        "together": evaluate_together({"full": full, "sampled": sampled}, score_fn, accelerator),
    }


def _dist_worker(out_dir: str) -> None:
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    result = {"num_processes": accelerator.num_processes, **_dist_evaluations(accelerator)}
    Path(out_dir, f"process{accelerator.process_index}.json").write_text(json.dumps(result))
    accelerator.wait_for_everyone()
    accelerator.end_training()  # destroys the process group: gloo aborts at exit otherwise


def test_two_processes_match_one_process(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*command, __file__, str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    expected = {"num_processes": 2, **_dist_evaluations()}
    for process in (0, 1):
        assert json.loads((tmp_path / f"process{process}.json").read_text()) == expected


if __name__ == "__main__":
    _dist_worker(sys.argv[1])
