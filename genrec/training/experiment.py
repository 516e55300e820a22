"""The data side of a run, shared by every trainer: dataset, split and evaluators.

Every trainer calls :func:`experiment` with no arguments; gin binds what differs from the defaults::

    experiment.dataset = "ml-100k"
    experiment.protocol = "full"        # or "sampled" (1 positive + 100 sampled negatives)

``--split NAME`` on the command line binds ``experiment.split``. The returned :class:`Experiment`
holds the loaded data, the split, one evaluator per evaluation set, and the ``info`` that
``metrics.json`` records (dataset, split, protocol, fingerprint, masking).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import gin
import numpy as np
import torch

from genrec.data import ItemCatalog, Interactions, Split, load_dataset
from genrec.data.splits import EvalSet
from genrec.evaluation import Evaluator

__all__ = ["Experiment", "experiment"]

ScoreFn = Callable[[np.ndarray, list[np.ndarray]], torch.Tensor]


@dataclass
class Experiment:
    """Loaded data, its split and the evaluators for ``valid`` and ``test``."""

    interactions: Interactions
    catalog: ItemCatalog
    split: Split
    evaluators: dict[str, Evaluator]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_items(self) -> int:
        return self.interactions.num_items

    def evaluate_scores(self, score: Callable[[torch.nn.Module, np.ndarray, list[np.ndarray]], torch.Tensor]):
        """An ``evaluate(model, which, accelerator)`` callable for the training loop.

        Args:
            score: ``score(model, users, histories) -> [b, N+1]`` scores of every item.
        """
        def evaluate(model, which, accelerator):
            return self.evaluators[which](lambda users, histories: score(model, users, histories), accelerator)

        return evaluate


@gin.configurable
def experiment(
    dataset: str = "ml-100k",
    split: str = "loo",
    min_rating: float | None = None,
    k_core: int | None = None,
    max_history: int | None = None,
    protocol: str = "full",
    mask_history: bool = False,
    eval_batch_size: int = 256,
    num_negatives: int = 100,
    negatives_seed: int = 0,
    eval_rows: int | None = None,
) -> Experiment:
    """Loads a dataset, splits it and builds the evaluators.

    Args:
        dataset: a name known to :func:`genrec.data.load_dataset` (``ml-100k``, ``ml-1m``, ...).
        split: ``loo`` (leave-one-out by time: valid = second-last, test = last) or another name in
            ``genrec.data.SPLITS``.
        min_rating: keep interactions rated at least this (``None``: keep all, as RecBole does).
        k_core: iteratively keep users and items with at least this many interactions.
        max_history: most recent items kept in evaluation histories (``None``: all).
        protocol: ``full`` ranks the target among all items; ``sampled`` among 1 + ``num_negatives``.
        mask_history: remove each user's history items from the candidates. Off by default: RecBole
            does not mask them for sequential models under full ranking, and a re-consumed item is
            a legitimate target.
        eval_batch_size: users per evaluation batch.
        num_negatives: sampled negatives per user for the ``sampled`` protocol.
        negatives_seed: seed of the sampled negatives (fixed so every model sees the same ones).
        eval_rows: evaluate valid and test on a fixed random sample of this many rows each (seeded
            by ``negatives_seed``; ``metrics.json`` records it); ``None``: every row. For models
            whose evaluation is costly (LC-Rec's beam search on a CPU) in debug runs; numbers from a
            sample are not comparable with full-set numbers.
    """
    interactions, catalog = load_dataset(dataset, min_rating=min_rating, k_core=k_core)
    data_split = interactions.split(split, max_history=max_history)
    evaluators = {
        which: Evaluator(_sample_rows(getattr(data_split, which), eval_rows, negatives_seed), interactions.num_items, protocol=protocol,
                         mask_history=mask_history, batch_size=eval_batch_size, num_negatives=num_negatives,
                         seed=negatives_seed)
        for which in ("valid", "test")
    }
    info = {"dataset": dataset, "split": split, "protocol": protocol, "mask_history": mask_history,
            "fingerprint": interactions.fingerprint(), "num_users": interactions.num_users,
            "num_items": interactions.num_items}
    if eval_rows is not None:
        info["eval_rows"] = {which: len(evaluator) for which, evaluator in evaluators.items()}
    return Experiment(interactions, catalog, data_split, evaluators, info)


def _sample_rows(eval_set: EvalSet, rows: int | None, seed: int) -> EvalSet:
    """``eval_set`` itself, or a fixed random sample of ``rows`` of its rows (in their original order)."""
    if rows is None or rows >= len(eval_set):
        return eval_set
    if rows < 1:
        raise ValueError(f"experiment.eval_rows must be >= 1 or None, got {rows}")
    keep = np.sort(np.random.default_rng(seed).choice(len(eval_set), rows, replace=False))
    return EvalSet(eval_set.users[keep], [eval_set.histories[i] for i in keep], eval_set.targets[keep])
