"""Batches of variable-length item histories as padded index tensors (item 0 is padding).

Two layouts, one per kind of model:

* :func:`left_pad` (SASRec, TIGER): a fixed width ``length``, the most recent item always in the
  last column, so it shares its positional embedding between training windows and evaluation;
* :func:`right_pad` (content-based models, CLLM4Rec): items from the first column, the width of the
  longest kept history (at least 1), so little padding is computed; a row's last item is at
  column ``min(len(history), max_history) - 1``.

Both keep the ``max_history`` (or ``length``) most recent items of each history.
Shapes: B histories, L / H the padded width.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["left_pad", "right_pad"]


def left_pad(histories: Sequence[np.ndarray], length: int) -> torch.Tensor:
    """Keeps the last ``length`` items of each history, left-padded with 0: LongTensor [B, L = length]."""
    out = np.zeros((len(histories), length), dtype=np.int64)
    for row, items in enumerate(histories):
        items = np.asarray(items)[-length:]
        if len(items):
            out[row, length - len(items):] = items
    return torch.from_numpy(out)


def right_pad(histories: Sequence[np.ndarray], max_history: int) -> torch.Tensor:
    """The ``max_history`` most recent items of each history, right-padded with 0: LongTensor [B, H].

    H is the length of the longest kept history, at least 1 (so an empty history is one 0 column).
    """
    kept = [np.asarray(items, dtype=np.int64)[-max_history:] for items in histories]
    width = max(1, max((len(items) for items in kept), default=0))
    out = np.zeros((len(kept), width), dtype=np.int64)
    for row, items in enumerate(kept):
        out[row, :len(items)] = items
    return torch.from_numpy(out)
