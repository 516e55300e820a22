"""HSTU: hierarchical sequential transduction units (Zhai et al., ICML 2024, "Actions Speak Louder
than Words: Trillion-Parameter Sequential Transducers for Generative Recommendations", arXiv 2402.17152).

A causal stack of HSTU layers over a user's most recent ``max_history`` items predicts the next item
at every position; item embeddings are shared between input and output (score of item ``i`` after
position ``t`` is ``<h_t, E_i>``), as in :class:`genrec.models.sasrec.SASRec`. One layer (pre-norm,
as in the paper's reference implementation)::

    U, V, Q, K = split(SiLU(f1(LayerNorm(X))))                   # pointwise projection
    A = SiLU(Q K^T + rab_p) / n  (causal, padded keys zeroed)    # pointwise attention, no softmax
    X = X + f2(Dropout(LayerNorm(A V) * U))                      # gated pointwise transformation

``n`` is ``max_history`` (the padded length, as in the reference code), a constant, so a history's
scores do not depend on how much padding it gets. ``rab_p`` is a learned relative position bias per
head over T5-style buckets of the distance ``i - j`` (exact for small distances, logarithmic up to
``max_history``). The paper also adds a bucketed *temporal* bias (log time differences); it is not
implemented here, because genrec's evaluation hands a model item histories only (``score(histories,
users)``), without their timestamps. The input is sqrt(D) * item embedding + a learned absolute
position (aligned to the most recent item, as SASRec), with dropout; a final LayerNorm precedes the scores.

Loss: full-softmax cross-entropy over all N items at every non-padded position (padding column
excluded), the same as SASRec's ``ce``, so the two are compared on architecture alone.

The model follows :class:`genrec.models.base.Recommender`: ``score(histories)`` scores every item in
float32 (users are not modelled). ``save_pretrained(folder)`` writes one safetensors file (weights
with a checksum; settings and raw item ids as metadata) that ``from_pretrained`` reads.

Shapes: B batch, L sequence length (``max_history``), D hidden size, N number of items.
"""

from __future__ import annotations

import math

import gin
import torch
import torch.nn.functional as F
from torch import nn

from genrec.models.single_file import ItemTableModel

__all__ = ["HSTU", "position_buckets"]

WEIGHTS = "hstu.safetensors"


def position_buckets(distance: torch.Tensor, num_buckets: int, max_distance: int) -> torch.Tensor:
    """T5-style buckets of non-negative distances: exact below ``num_buckets // 2``, then logarithmic
    up to ``max_distance`` (larger distances share the last bucket). Returns LongTensor like ``distance``."""
    distance = distance.clamp(min=0)
    exact = num_buckets // 2
    if exact >= max_distance or num_buckets - exact < 1:  # every distance fits an exact bucket
        return distance.clamp(max=num_buckets - 1)
    log_ratio = torch.log(distance.clamp(min=exact).float() / exact) / math.log(max_distance / exact)
    large = exact + (log_ratio * (num_buckets - exact)).long()
    return torch.where(distance < exact, distance, large.clamp(max=num_buckets - 1))


class _Layer(nn.Module):
    """One HSTU layer (see the module docstring)."""

    def __init__(self, hidden: int, heads: int, qk_dim: int, v_dim: int, max_history: int, buckets: int,
                 dropout: float, attn_dropout: float):
        super().__init__()
        self.heads, self.qk_dim, self.v_dim, self.n = heads, qk_dim, v_dim, max_history
        self.attn_dropout, self.num_buckets = attn_dropout, buckets
        self.ln_in = nn.LayerNorm(hidden, eps=1e-6)
        self.uvqk = nn.Linear(hidden, heads * (2 * v_dim + 2 * qk_dim))
        self.rab = nn.Embedding(buckets, heads)  # relative position bias, [buckets, H]
        self.ln_attn = nn.LayerNorm(heads * v_dim, eps=1e-6)
        self.out = nn.Linear(heads * v_dim, hidden)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        H = self.heads
        u, v, q, k = torch.split(F.silu(self.uvqk(self.ln_in(x))),
                                 [H * self.v_dim, H * self.v_dim, H * self.qk_dim, H * self.qk_dim], dim=-1)
        q = q.view(B, L, H, self.qk_dim).transpose(1, 2)  # [B, H, L, d]
        k = k.view(B, L, H, self.qk_dim).transpose(1, 2)
        v = v.view(B, L, H, self.v_dim).transpose(1, 2)
        idx = torch.arange(L, device=x.device)
        bucket = position_buckets(idx[:, None] - idx[None, :], self.num_buckets, self.n)  # [L, L]
        scores = q @ k.transpose(-1, -2) + self.rab(bucket).permute(2, 0, 1)[None]  # [B, H, L, L]
        weights = F.silu(scores) / self.n * allowed  # no softmax: SiLU, normalised by the length
        weights = F.dropout(weights, self.attn_dropout, self.training)
        a = (weights @ v).transpose(1, 2).reshape(B, L, H * self.v_dim)
        return x + self.out(self.drop(self.ln_attn(a) * u))


def _check_int(name: str, value, low: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"HSTU.{name} = {value!r} cannot work; it must be an int >= {low}")


@gin.configurable(denylist=["num_items"])
class HSTU(ItemTableModel):
    """Causal HSTU next-item model (pointwise SiLU attention, gated by U).

    Args:
        num_items: N, items are 1..N and 0 is padding (from the data, never from gin).
        max_history: L, most recent items the model sees; also the attention normaliser n.
        hidden_size: D, the width of item embeddings and of the residual stream.
        num_layers: HSTU layers.
        num_heads: attention heads per layer.
        qk_dim: width of Q and K per head (default ``hidden_size // num_heads``).
        v_dim: width of U and V per head (default ``hidden_size // num_heads``).
        num_position_buckets: buckets of the relative position bias (>= 2; distances below half of
            them get one bucket each, longer ones share logarithmic buckets up to ``max_history``).
        dropout: dropout on embeddings and on the gated attention output.
        attn_dropout: dropout on attention weights.
    """

    weights_file = WEIGHTS

    def __init__(self, num_items: int, max_history: int = 50, hidden_size: int = 64, num_layers: int = 2,
                 num_heads: int = 2, qk_dim: int | None = None, v_dim: int | None = None,
                 num_position_buckets: int = 32, dropout: float = 0.2, attn_dropout: float = 0.2):
        super().__init__()
        for name, value in {"max_history": max_history, "hidden_size": hidden_size, "num_layers": num_layers,
                            "num_heads": num_heads}.items():
            _check_int(name, value)
        _check_int("num_position_buckets", num_position_buckets, low=2)
        if (qk_dim is None or v_dim is None) and hidden_size % num_heads:
            raise ValueError(f"HSTU.hidden_size ({hidden_size}) must be divisible by HSTU.num_heads ({num_heads}) "
                             "unless HSTU.qk_dim and HSTU.v_dim are both set")
        qk_dim = hidden_size // num_heads if qk_dim is None else qk_dim
        v_dim = hidden_size // num_heads if v_dim is None else v_dim
        _check_int("qk_dim", qk_dim)
        _check_int("v_dim", v_dim)
        for name, value in {"dropout": dropout, "attn_dropout": attn_dropout}.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
                raise ValueError(f"HSTU.{name} = {value!r} cannot work; it must be a number in [0, 1)")
        self.num_items, self.max_history = num_items, max_history
        self.settings = {"num_items": num_items, "max_history": max_history, "hidden_size": hidden_size,
                         "num_layers": num_layers, "num_heads": num_heads, "qk_dim": qk_dim, "v_dim": v_dim,
                         "num_position_buckets": num_position_buckets, "dropout": dropout,
                         "attn_dropout": attn_dropout}
        self.item_emb = nn.Embedding(num_items + 1, hidden_size, padding_idx=0)
        self.pos_emb = nn.Embedding(max_history, hidden_size)
        self.drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(_Layer(hidden_size, num_heads, qk_dim, v_dim, max_history, num_position_buckets,
                                           dropout, attn_dropout) for _ in range(num_layers))
        self.ln_out = nn.LayerNorm(hidden_size, eps=1e-6)
        self.emb_scale = math.sqrt(hidden_size)  # input embeddings are scaled by sqrt(D), as in the paper's code
        self.apply(self._init)

    def _init(self, module: nn.Module) -> None:
        """The reference implementation's initialisation: N(0, 0.02) item embeddings and U/V/Q/K
        projections, Xavier-uniform output projections, U(+-1/sqrt(D)) position embeddings."""
        if isinstance(module, _Layer):
            module.uvqk.weight.data.normal_(0.0, 0.02)
            nn.init.xavier_uniform_(module.out.weight)
            for linear in (module.uvqk, module.out):
                nn.init.zeros_(linear.bias)
            module.rab.weight.data.normal_(0.0, 0.02)
        elif module is self.item_emb:
            module.weight.data.normal_(0.0, 0.02)
        elif module is self.pos_emb:
            bound = 1.0 / math.sqrt(module.weight.shape[1])
            module.weight.data.uniform_(-bound, bound)

    def encode(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, L, D] for left-padded item ids [B, L] (L <= max_history)."""
        B, L = input_ids.shape
        if L > self.max_history:
            raise ValueError(f"HSTU got sequences of length {L}, more than its max_history ({self.max_history}); "
                             "keep the last max_history items")
        positions = torch.arange(self.max_history - L, self.max_history, device=input_ids.device)
        h = self.drop(self.item_emb(input_ids) * self.emb_scale + self.pos_emb(positions))
        real = input_ids > 0
        idx = torch.arange(L, device=input_ids.device)
        causal = idx[None, :] <= idx[:, None]  # [L(query), L(key)]
        allowed = (causal[None] & real[:, None, :])[:, None].to(h.dtype)  # [B, 1, L, L]; padded keys get 0
        for layer in self.layers:
            h = layer(h, allowed)
        return self.ln_out(h)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None):
        """Args: input_ids [B, L] left-padded; labels [B, L] next items, -100 where no loss.

        Returns:
            (hidden [B, L, D], full-softmax cross-entropy over the labelled positions, or None)
        """
        hidden = self.encode(input_ids)
        if labels is None:
            return hidden, None
        keep = labels != -100
        return hidden, F.cross_entropy(self.logits(hidden[keep]), labels[keep])
