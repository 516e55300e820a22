"""Most-popular baseline: every user gets the items ranked by their training interaction count.

The floor every learned model must clear. Ties are broken pessimistically by the evaluator, so
items with equal counts do not flatter the baseline. A :class:`genrec.models.base.Recommender`
whose scores ignore the history and the user.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from genrec.models.base import Recommender

__all__ = ["MostPopular"]


class MostPopular(Recommender):
    """Scores item i by its number of interactions in the training sequences.

    Args:
        train: time-ordered item indices per user (the split's ``train``).
        num_items: N; items are 1..N.
    """

    def __init__(self, train: list[np.ndarray], num_items: int):
        super().__init__()
        counts = np.bincount(np.concatenate(train) if train else np.zeros(0, np.int64), minlength=num_items + 1)
        counts = torch.from_numpy(counts[: num_items + 1].astype(np.float32))
        counts[0] = float("-inf")
        self.register_buffer("counts", counts)
        self.num_items = num_items

    def score(self, histories: Sequence[np.ndarray], users: np.ndarray | None = None) -> torch.Tensor:
        """The same float32 popularity row [B, N+1] for every history (column 0 is -inf)."""
        return self.counts.expand(len(histories), -1)
