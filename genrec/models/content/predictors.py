"""Click predictors: (user, candidate item) -> score.

Built as ``Predictor(dim=D)``; ``forward(user [B, D], items [B, C, D], history [B, H, D], mask [B, H])
-> [B, C]`` scores C candidates per row (training: the positive and its negatives). ``score_all`` scores
every item for every row of a batch (full ranking): the dot product in one matrix product, the others
over chunks of items so that memory stays bounded (``pairs_per_chunk`` (user, item) pairs per call).

* :class:`DotPredictor`: ``<u, i>`` (NRMS, NAML, LSTUR).
* :class:`DCNPredictor` (Wang et al., "Deep & Cross Network", ADKDD 2017): a cross network
  ``x_{l+1} = x_0 (x_l . w_l) + b_l + x_l`` and an MLP over ``x_0 = [u; i]``, combined by a linear layer.
* :class:`DeepFMPredictor` (Guo et al., IJCAI 2017) with two fields (user, item): first order
  ``w . [u; i]``, second order ``<u, i>``, plus an MLP over ``[u; i]``.
* :class:`DINPredictor` (Zhou et al., "Deep Interest Network", KDD 2018): target attention. Each
  history item h_j gets the weight ``MLP([h_j, c, h_j - c, h_j * c])`` (no softmax, as in DIN), the
  interest is ``sum_j w_j h_j``, and ``MLP([u, interest, c])`` scores. Its first attention layer is
  split by input block, ``W [h; c; h-c; h*c] = (W_h + W_d) h + (W_c - W_d) c + W_p (h * c)``, so that
  only the ``h * c`` term is computed per (user, item, history position).
"""

from __future__ import annotations

import gin
import torch
from torch import nn

__all__ = ["DCNPredictor", "DINPredictor", "DeepFMPredictor", "DotPredictor", "Predictor"]


def _mlp(sizes: list[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class Predictor(nn.Module):
    """Base of click predictors (see the module docstring).

    Attributes:
        pairs_per_chunk: (user, item) pairs per ``forward`` call in :meth:`score_all`.
    """

    pairs_per_chunk = 1 << 16

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def score_all(self, user: torch.Tensor, items: torch.Tensor, history: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
        """Scores [b, N] of items [N, D] (shared by every row) for users [b, D]."""
        b = user.shape[0]
        step = max(1, self.pairs_per_chunk // max(b, 1))
        return torch.cat([self(user, items[start:start + step].unsqueeze(0).expand(b, -1, -1), history, mask)
                          for start in range(0, len(items), step)], dim=1)


@gin.configurable(denylist=["dim"])
class DotPredictor(Predictor):
    """Dot product of user and item vectors."""

    def forward(self, user, items, history=None, mask=None):
        return torch.einsum("bd,bcd->bc", user, items)

    def score_all(self, user, items, history=None, mask=None):
        return user @ items.T


@gin.configurable(denylist=["dim"])
class DCNPredictor(Predictor):
    """Deep & Cross Network over ``[u; i]``.

    Args:
        dim: D (the input is 2D wide).
        cross_layers: cross layers.
        hidden: widths of the deep MLP.
        dropout: dropout in the MLP.
    """

    def __init__(self, dim: int, cross_layers: int = 2, hidden: tuple[int, ...] = (128, 64), dropout: float = 0.1):
        super().__init__(dim)
        width = 2 * dim
        self.cross_w = nn.Parameter(torch.randn(cross_layers, width) * width ** -0.5)
        self.cross_b = nn.Parameter(torch.zeros(cross_layers, width))
        self.deep = _mlp([width, *hidden], dropout)
        self.out = nn.Linear(width + (hidden[-1] if hidden else width), 1)

    def forward(self, user, items, history=None, mask=None):
        x0 = torch.cat([user.unsqueeze(1).expand_as(items), items], dim=-1)  # [B, C, 2D]
        x = x0
        for w, b in zip(self.cross_w, self.cross_b):
            x = x0 * (x @ w).unsqueeze(-1) + b + x
        return self.out(torch.cat([x, self.deep(x0)], dim=-1)).squeeze(-1)


@gin.configurable(denylist=["dim"])
class DeepFMPredictor(Predictor):
    """DeepFM over two fields, the user and the item vector.

    Args:
        dim: D.
        hidden: widths of the deep MLP.
        dropout: dropout in the MLP.
    """

    def __init__(self, dim: int, hidden: tuple[int, ...] = (128, 64), dropout: float = 0.1):
        super().__init__(dim)
        self.first_order = nn.Linear(2 * dim, 1)
        self.deep = nn.Sequential(_mlp([2 * dim, *hidden], dropout), nn.Linear(hidden[-1] if hidden else 2 * dim, 1))

    def forward(self, user, items, history=None, mask=None):
        x = torch.cat([user.unsqueeze(1).expand_as(items), items], dim=-1)  # [B, C, 2D]
        second_order = torch.einsum("bd,bcd->bc", user, items)
        return (self.first_order(x) + self.deep(x)).squeeze(-1) + second_order


@gin.configurable(denylist=["dim"])
class DINPredictor(Predictor):
    """Deep Interest Network target attention over the history item vectors.

    Args:
        dim: D.
        attention_hidden: width of the attention unit's hidden layer.
        hidden: widths of the scoring MLP over ``[u; interest; c]``.
        dropout: dropout in the scoring MLP.
        pairs_per_chunk: (user, item) pairs per call in full ranking; each costs H x attention_hidden floats.
    """

    def __init__(self, dim: int, attention_hidden: int = 32, hidden: tuple[int, ...] = (128, 64),
                 dropout: float = 0.1, pairs_per_chunk: int = 4096):
        super().__init__(dim)
        self.pairs_per_chunk = pairs_per_chunk
        self.att_history = nn.Linear(dim, attention_hidden)  # (W_h + W_d) h + bias
        self.att_item = nn.Linear(dim, attention_hidden, bias=False)  # (W_c - W_d) c
        self.att_product = nn.Parameter(torch.randn(dim, attention_hidden) * dim ** -0.5)  # W_p (h * c)
        self.att_out = nn.Linear(attention_hidden, 1)
        self.score_mlp = nn.Sequential(_mlp([3 * dim, *hidden], dropout), nn.Linear(hidden[-1] if hidden else 3 * dim, 1))

    def interest(self, items: torch.Tensor, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Target-attended interest [B, C, D] of candidates [B, C, D] over history [B, H, D]."""
        product = torch.einsum("bhd,bcd,da->bcha", history, items, self.att_product)  # [B, C, H, A]
        pre = product + self.att_history(history).unsqueeze(1) + self.att_item(items).unsqueeze(2)
        weights = self.att_out(torch.sigmoid(pre)).squeeze(-1) * mask.unsqueeze(1)  # [B, C, H]
        return torch.einsum("bch,bhd->bcd", weights, history)

    def forward(self, user, items, history, mask):
        interest = self.interest(items, history, mask)
        x = torch.cat([user.unsqueeze(1).expand_as(items), interest, items], dim=-1)
        return self.score_mlp(x).squeeze(-1)
