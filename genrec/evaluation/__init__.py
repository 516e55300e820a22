"""Evaluation: ranking metrics and the protocols that produce ranks.

Protocols (:class:`Evaluator`):

- ``"full"`` (default): each row's target is ranked among all N items (indices 1..N; index 0 is
  padding and never a candidate). Generative models that return top-K item ids are evaluated
  under this protocol only (:meth:`Evaluator.evaluate_ranked`); a target missing from the list
  has rank :data:`NOT_RANKED`, a miss at every cut-off.
- ``"sampled"``: the target is ranked among itself and 100 negatives per row, drawn once per
  evaluator, uniformly from the items outside the row's history and target
  (:func:`sample_negatives`); for parity with papers that report it.

Masking: by default nothing is masked (as RecBole does for sequential models under full ranking),
so history items compete with the target. ``mask_history=True`` removes each row's history items
from its candidates; the target itself is never removed.

Ties are pessimistic: the target's rank counts every other candidate whose score is greater than
or equal to its own, so constant or heavily tied scores cannot inflate metrics (a constant model
ranks every target last).

Metrics (:func:`compute_metrics`): Recall@K, NDCG@K and MRR@K for K in :data:`KS`, averaged over
rows. With one target per row, Recall@K equals Hit Ratio@K (HR@K), so only ``recall@k`` is
reported.

One model under several protocols at once (:func:`evaluate_together`): each batch is scored once
and ranked by every evaluator of the same rows, e.g. full ranking and sampled side by side.
"""
from genrec.evaluation.impressions import (
    IMPRESSION_KS,
    evaluate_impressions,
    impression_auc,
    impression_mrr,
    impression_ndcg,
    user_gauc,
)
from genrec.evaluation.metrics import (
    KS,
    NOT_RANKED,
    compute_metrics,
    list_health,
    mrr_at_k,
    ndcg_at_k,
    ranks_from_ranked_lists,
    ranks_from_scores,
    recall_at_k,
)
from genrec.evaluation.protocols import Evaluator, evaluate_together, sample_negatives

__all__ = [
    "IMPRESSION_KS",
    "KS",
    "NOT_RANKED",
    "Evaluator",
    "compute_metrics",
    "evaluate_impressions",
    "evaluate_together",
    "impression_auc",
    "impression_mrr",
    "impression_ndcg",
    "list_health",
    "mrr_at_k",
    "ndcg_at_k",
    "ranks_from_ranked_lists",
    "ranks_from_scores",
    "recall_at_k",
    "sample_negatives",
    "user_gauc",
]
