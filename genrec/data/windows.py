"""Training windows for next-item models with a loss at every position.

RecBole feeds a sequential model every prefix of every training sequence and computes one loss per
prefix (98,114 forward passes of length 50 per epoch on ml-100k). A causal model can compute the
loss for all positions of a window in one pass instead. A user's training sequence ``s`` (length n)
yields targets ``s[1:]``; the windows below cover every target exactly once per epoch:

* window ``w`` ends at ``e_w = n - w * stride`` (exclusive), inputs ``s[max(0, e_w-1-L) : e_w-1]``,
  labels ``s[max(0, e_w-1-L)+1 : e_w]``, both left-padded to L;
* in every window but the earliest, labels before ``e_w - stride`` are masked (-100): the previous
  window already trains them, so each of them sees at least ``L - stride`` items of context.

``stride = L`` gives non-overlapping windows (cheapest); a smaller stride gives the early targets of
each window more context at the cost of more windows.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["SequenceWindows"]


class SequenceWindows(Dataset):
    """All-position next-item windows over training sequences.

    Args:
        sequences: time-ordered item indices per user (users with fewer than 2 items add nothing).
        max_len: L, the window length.
        stride: distance between window ends (default L); 1 <= stride <= L.

    Items: ``{"input_ids": LongTensor [L], "labels": LongTensor [L]}`` with padding 0 / -100.
    """

    def __init__(self, sequences: list[np.ndarray], max_len: int, stride: int | None = None):
        stride = stride or max_len
        if not 1 <= stride <= max_len:
            raise ValueError(f"window stride must be in 1..max_len ({max_len}), got {stride}")
        inputs, labels = [], []
        for seq in sequences:
            n = len(seq)
            ends = list(range(n, 1, -stride))
            for w, end in enumerate(ends):
                start = max(0, end - 1 - max_len)
                x = np.zeros(max_len, dtype=np.int64)
                y = np.full(max_len, -100, dtype=np.int64)
                x[max_len - (end - 1 - start):] = seq[start:end - 1]
                y[max_len - (end - 1 - start):] = seq[start + 1:end]
                if w < len(ends) - 1:  # not the earliest window: earlier targets belong to the next one
                    new = min(stride, end - 1)
                    y[: max_len - new] = -100
                inputs.append(x)
                labels.append(y)
        self.input_ids = torch.from_numpy(np.stack(inputs)) if inputs else torch.zeros(0, max_len, dtype=torch.long)
        self.labels = torch.from_numpy(np.stack(labels)) if labels else torch.zeros(0, max_len, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids[i], "labels": self.labels[i]}
