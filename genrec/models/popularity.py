"""Most-popular baseline: every user gets the items ranked by their training interaction count.

The floor every learned model must clear. Ties are broken pessimistically by the evaluator, so
items with equal counts do not flatter the baseline.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["MostPopular"]


class MostPopular:
    """Scores item i by its number of interactions in the training sequences.

    Args:
        train: time-ordered item indices per user (the split's ``train``).
        num_items: N; items are 1..N.
    """

    def __init__(self, train: list[np.ndarray], num_items: int):
        counts = np.bincount(np.concatenate(train) if train else np.zeros(0, np.int64), minlength=num_items + 1)
        self.counts = torch.from_numpy(counts[: num_items + 1].astype(np.float32))
        self.counts[0] = float("-inf")

    def score(self, histories: list[np.ndarray]) -> torch.Tensor:
        """The same popularity row [B, N+1] for every history."""
        return self.counts.expand(len(histories), -1)
