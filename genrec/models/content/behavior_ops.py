"""Behavior operators: the vectors of a user's history items -> one user vector.

Built as ``Operator(dim=D)``; ``forward(history [B, H, D], mask [B, H]) -> [B, D]``. Histories are in
time order and right-padded (``mask`` True at real items); every row has at least one item.

* :class:`AdditiveBehavior` (NAML's user encoder, Legommenders' ``Ada``): additive attention pooling.
* :class:`GRUBehavior` (LSTUR's short-term user model, without the long-term user-ID embedding):
  a GRU over the history, its last hidden state.
* :class:`TransformerBehavior` (NRMS's user encoder): multi-head self-attention + additive pooling;
  optional learned positions (NRMS has none).
* :class:`FastformerBehavior`: Fastformer blocks + additive pooling.
* :class:`MeanBehavior`: the mean of the history vectors (Legommenders' ``Pooling``).
"""

from __future__ import annotations

import gin
import torch
from torch import nn

from genrec.models.content.layers import AdditivePool, FastformerLayer, SelfAttentionLayer, masked_mean

__all__ = ["AdditiveBehavior", "BehaviorOperator", "FastformerBehavior", "GRUBehavior", "MeanBehavior",
           "TransformerBehavior"]


class BehaviorOperator(nn.Module):
    """Base of behavior operators: ``forward(history [B, H, D], mask [B, H]) -> [B, D]``."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim


@gin.configurable(denylist=["dim"])
class AdditiveBehavior(BehaviorOperator):
    """Additive attention over the history items (NAML).

    Args:
        dim: D.
        hidden: width of the attention projection (default D).
    """

    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__(dim)
        self.pool = AdditivePool(dim, hidden)

    def forward(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.pool(history, mask)


@gin.configurable(denylist=["dim"])
class GRUBehavior(BehaviorOperator):
    """GRU over the history in time order; the user vector is the hidden state after the last real item.

    Args:
        dim: D (input and hidden width).
        layers: stacked GRU layers.
        dropout: dropout between GRU layers (with ``layers > 1``).
    """

    def __init__(self, dim: int, layers: int = 1, dropout: float = 0.0):
        super().__init__(dim)
        self.gru = nn.GRU(dim, dim, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)

    def forward(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lengths = mask.sum(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(history, lengths, batch_first=True, enforce_sorted=False)
        _, last = self.gru(packed)  # [layers, B, D], in the input's row order
        return last[-1]


@gin.configurable(denylist=["dim"])
class TransformerBehavior(BehaviorOperator):
    """Multi-head self-attention over the history items, then additive pooling (NRMS).

    Args:
        dim: D.
        heads: attention heads.
        layers: self-attention layers.
        max_history: longest history, for the position table when ``positions`` is on.
        positions: add learned position embeddings counted from the most recent item.
        dropout: dropout on attention.
    """

    def __init__(self, dim: int, heads: int = 4, layers: int = 1, max_history: int = 200, positions: bool = False,
                 dropout: float = 0.2):
        super().__init__(dim)
        self.positions = nn.Embedding(max_history, dim) if positions else None
        self.layers = nn.ModuleList(SelfAttentionLayer(dim, heads, dropout) for _ in range(layers))
        self.pool = AdditivePool(dim)

    def forward(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.positions is not None:
            if history.shape[1] > self.positions.num_embeddings:
                raise ValueError(f"history of {history.shape[1]} items is longer than TransformerBehavior.max_history "
                                 f"({self.positions.num_embeddings}); raise it")
            age = (mask.sum(1, keepdim=True) - 1 - torch.arange(history.shape[1], device=history.device)).clamp(min=0)
            history = history + self.positions(age)
        for layer in self.layers:
            history = layer(history, mask)
        return self.pool(history, mask)


@gin.configurable(denylist=["dim"])
class FastformerBehavior(BehaviorOperator):
    """Fastformer blocks over the history items, then additive pooling.

    Args:
        dim: D.
        heads: heads.
        layers: Fastformer blocks.
        dropout: dropout inside the blocks.
    """

    def __init__(self, dim: int, heads: int = 4, layers: int = 1, dropout: float = 0.2):
        super().__init__(dim)
        self.layers = nn.ModuleList(FastformerLayer(dim, heads, dropout) for _ in range(layers))
        self.pool = AdditivePool(dim)

    def forward(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            history = layer(history, mask)
        return self.pool(history, mask)


@gin.configurable(denylist=["dim"])
class MeanBehavior(BehaviorOperator):
    """Mean of the history item vectors (no parameters)."""

    def forward(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_mean(history, mask)
