"""The impressions protocol: a model scores the candidates of each impression; metrics per impression.

MIND's protocol (Wu et al., ACL 2020): for every impression, the model scores the news shown from
the user's history; AUC, MRR, nDCG@5 and nDCG@10 are computed per impression and averaged, and
GAUC pools each user's impressions (:func:`genrec.evaluation.impressions.evaluate_impressions`).

:class:`ImpressionEvaluator` runs a ``score(histories, candidates) -> [b, C]`` function over
batches of impressions (the columns past a row's own candidates are ignored). On several processes
each takes every ``world``-th impression and the scores are gathered, so every process returns
the same metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from genrec.evaluation.impressions import evaluate_impressions
from genrec.progress import progress

__all__ = ["ImpressionEvaluator"]

ScoreCandidates = Callable[[list[np.ndarray], list[np.ndarray]], torch.Tensor]


class ImpressionEvaluator:
    """Scores every impression of a set and reports the impression metrics.

    Args:
        impressions: an object with ``histories``, ``candidates``, ``labels`` (lists of [I] arrays)
            and ``users`` ([I]), e.g. :class:`genrec.data.mind_small.ImpressionSet`.
        batch_size: impressions per call of the score function.
        label: progress-bar text.
    """

    protocol = "impressions"

    def __init__(self, impressions, batch_size: int = 256, label: str = "evaluating impressions"):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.impressions, self.batch_size, self.label = impressions, batch_size, label

    def __len__(self) -> int:
        return len(self.impressions.candidates)

    def scores(self, score: ScoreCandidates, accelerator=None) -> list[np.ndarray]:
        """float64 [C_i] scores of every impression, in order (gathered over processes)."""
        world = accelerator.num_processes if accelerator is not None else 1
        rank = accelerator.process_index if accelerator is not None else 0
        rows = list(range(rank, len(self), world))
        own: list[tuple[int, np.ndarray]] = []
        histories, candidates = self.impressions.histories, self.impressions.candidates
        bar = progress(total=len(rows), desc=self.label, unit="impression", leave=False, disable=rank != 0)
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start:start + self.batch_size]
            out = score([histories[i] for i in batch], [candidates[i] for i in batch]).float().cpu().numpy()
            own += [(i, out[row, :len(candidates[i])].astype(np.float64)) for row, i in enumerate(batch)]
            bar.update(len(batch))
        bar.close()
        if world > 1:
            from accelerate.utils import gather_object

            own = gather_object(own)
        result: list[np.ndarray | None] = [None] * len(self)
        for i, values in own:
            result[i] = values
        if any(values is None for values in result):
            raise RuntimeError("gathered impression scores do not cover every impression exactly once")
        return result

    def __call__(self, score: ScoreCandidates, accelerator=None, ks: Sequence[int] = (5, 10)) -> dict:
        """``evaluate_impressions`` of the scores: auc, mrr, ndcg@5, ndcg@10, gauc and the counts."""
        scores = self.scores(score, accelerator)
        return evaluate_impressions(self.impressions.labels, scores, users=self.impressions.users, ks=ks)
