"""Next-item training examples for generative recommenders: every prefix of a sequence -> its next item.

TIGER (Rajput et al., NeurIPS 2023, arXiv 2305.05065) and LC-Rec's seqrec task train on each
user's training sequence ``s`` (length n) as n - 1 examples: the items before position t (at most
``max_history`` of the most recent ones) -> item ``s[t]``, for t = 1 .. n-1. Unlike a causal model
(:mod:`genrec.data.windows`), an encoder-decoder takes one target per forward pass, so every
prefix is its own example.

Examples are stored as one [E, H] array of left-padded histories (item 0 = padding), so that the
most recent item is always in the last column; the model turns item indices into tokens itself.

Shapes: E examples, H ``max_history``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["NextItemPrefixes"]


class NextItemPrefixes(Dataset):
    """Every (history prefix -> next item) example of the training sequences.

    Args:
        sequences: time-ordered item indices (1..N) per user; user ``u`` is ``sequences[u]``. Users
            with fewer than 2 items add nothing.
        max_history: H >= 1, the most recent items kept in each history.

    Items: ``{"history": LongTensor [H] (left-padded with 0), "target": LongTensor [] (item index),
    "user": LongTensor [] (user index)}``.
    """

    def __init__(self, sequences: Sequence[np.ndarray], max_history: int = 20):
        if max_history < 1:
            raise ValueError(f"max_history must be >= 1, got {max_history}")
        self.max_history = max_history
        lengths = np.array([max(len(s) - 1, 0) for s in sequences], dtype=np.int64)
        total = int(lengths.sum())
        histories = np.zeros((total, max_history), dtype=np.int32)
        targets = np.zeros(total, dtype=np.int64)
        users = np.repeat(np.arange(len(sequences), dtype=np.int64), lengths)
        row = 0
        for seq, n in zip(sequences, lengths):
            if n == 0:
                continue
            seq = np.asarray(seq, dtype=np.int64)
            # padded[j] holds seq[j - H] (0 before the sequence); history t = padded[t : t + H]
            padded = np.concatenate([np.zeros(max_history, dtype=np.int64), seq])
            windows = np.lib.stride_tricks.sliding_window_view(padded[:-1], max_history)  # [len(seq), H]
            histories[row:row + n] = windows[1:n + 1]
            targets[row:row + n] = seq[1:]
            row += n
        self.histories = torch.from_numpy(histories)
        self.targets = torch.from_numpy(targets)
        self.users = torch.from_numpy(users)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"history": self.histories[i].long(), "target": self.targets[i], "user": self.users[i]}
