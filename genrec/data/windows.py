"""Training examples cut from users' training sequences: next-item windows and history examples.

**Windows** (:class:`SequenceWindows`), for causal models with a loss at every position (SASRec,
CLLM4Rec). RecBole feeds a sequential model every prefix of every training sequence and computes
one loss per prefix (98,114 forward passes of length 50 per epoch on ml-100k). A causal model can
compute the loss for all positions of a window in one pass instead. A user's training sequence
``s`` (length n) yields targets ``s[1:]``; the windows below cover every target exactly once per
epoch:

* window ``w`` ends at ``e_w = n - w * stride`` (exclusive), inputs ``s[max(0, e_w-1-L) : e_w-1]``,
  labels ``s[max(0, e_w-1-L)+1 : e_w]``, both left-padded to L;
* in every window but the earliest, labels before ``e_w - stride`` are masked (-100): the previous
  window already trains them, so each of them sees at least ``L - stride`` items of context.

``stride = L`` gives non-overlapping windows (cheapest); a smaller stride gives the early targets of
each window more context at the cost of more windows.

With ``with_user=True`` (CLLM4Rec's soft-token sequence ``[user, s_a, ..., s_{e-2}]``) every window
is preceded by a user position that predicts the window's first item, so ``s[0]`` is a target too
(predicted from the user alone) and a user with one item has one window: windows end at
``e = n, n - stride, ..., > 0``, labels are ``s[max(0, e-1-L) : e]`` (one more than the inputs), and
the inputs are right-padded (the user position comes first).

**History examples** (:func:`history_examples`), for models trained on (history, target) pairs
(content-based): one example per (user, position t >= 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from genrec.training.arrays import ArrayDataset

__all__ = ["SequenceWindows", "history_examples"]


class SequenceWindows(Dataset):
    """All-position next-item windows over training sequences (see the module docstring).

    Args:
        sequences: time-ordered item indices per user index (users with fewer than 2 items, or with
            none when ``with_user``, add nothing).
        max_history: L, the most items in a window's input.
        stride: distance between window ends (default L); 1 <= stride <= L.
        with_user: precede every window by its user's position (CLLM4Rec).

    Items: ``{"input_ids": LongTensor [L], "labels": LongTensor [L]}``, left-padded with 0 / -100; with
    ``with_user``: ``{"users": LongTensor [], "items": LongTensor [L] (right-padded with 0),
    "labels": LongTensor [L + 1] (-100 where no loss; position 0 is the user's)}``.
    """

    def __init__(self, sequences: Sequence[np.ndarray], max_history: int, stride: int | None = None,
                 with_user: bool = False):
        stride = max_history if stride is None else stride  # 0 is an error, not the default
        if max_history < 1 or not 1 <= stride <= max_history:
            raise ValueError(f"window stride (a trainer's window_stride) must be in 1..max_history ({max_history}), "
                             f"got {stride}")
        self.with_user = with_user
        prefix = int(with_user)  # positions before the first item: the user's
        width = max_history + prefix  # label width
        users, inputs, labels = [], [], []
        for user, seq in enumerate(sequences):
            seq = np.asarray(seq, dtype=np.int64)
            ends = list(range(len(seq), 1 - prefix, -stride))
            for w, end in enumerate(ends):
                start = max(0, end - 1 - max_history)
                x = seq[start:end - 1]
                y = seq[start + 1 - prefix:end].copy()
                if w < len(ends) - 1:  # not the earliest window: earlier targets belong to the next one
                    y[: len(y) - min(stride, end - 1 + prefix)] = -100
                padded_x = np.zeros(max_history, dtype=np.int64)
                padded_y = np.full(width, -100, dtype=np.int64)
                if with_user:
                    padded_x[:len(x)], padded_y[:len(y)] = x, y
                else:
                    padded_x[max_history - len(x):], padded_y[width - len(y):] = x, y
                users.append(user)
                inputs.append(padded_x)
                labels.append(padded_y)
        self.users = torch.tensor(users, dtype=torch.long)
        self.input_ids = (torch.from_numpy(np.stack(inputs)) if inputs
                          else torch.zeros(0, max_history, dtype=torch.long))
        self.labels = torch.from_numpy(np.stack(labels)) if labels else torch.zeros(0, width, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if self.with_user:
            return {"users": self.users[i], "items": self.input_ids[i], "labels": self.labels[i]}
        return {"input_ids": self.input_ids[i], "labels": self.labels[i]}


def history_examples(sequences: Sequence[np.ndarray], max_history: int) -> ArrayDataset:
    """One example per (user, position t >= 1): the items before t (at most ``max_history``,
    right-padded with 0) and item t.

    Returns:
        ``ArrayDataset(history=int32 [M, H], target=int64 [M])``, users in order, positions in time order.
    """
    histories, targets = [], []
    for seq in sequences:
        seq = np.asarray(seq, dtype=np.int64)
        for t in range(1, len(seq)):
            row = np.zeros(max_history, dtype=np.int32)
            past = seq[max(0, t - max_history):t]
            row[:len(past)] = past
            histories.append(row)
            targets.append(seq[t])
    if not targets:
        raise ValueError("no training examples: every training sequence is shorter than 2 items")
    return ArrayDataset(history=torch.from_numpy(np.stack(histories)),
                        target=torch.tensor(targets, dtype=torch.long))
