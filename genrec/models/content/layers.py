"""Building blocks shared by the content and behavior operators.

* :class:`AdditivePool`: additive attention pooling (Bahdanau-style; NAML/NRMS's "additive attention"):
  ``a_t = q . tanh(W x_t + b)``, masked softmax over t, output ``sum_t a_t x_t``.
* :class:`SelfAttentionLayer`: multi-head self-attention with a key padding mask (NRMS), residual + LayerNorm.
* :class:`FastformerLayer`: Fastformer (Wu et al., "Fastformer: Additive Attention Can Be All You Need",
  arXiv 2108.09084): a global query and a global key built by additive attention, linear in L.

Shapes: B batch (items or users), L sequence length (tokens or history items), D width.
A mask is ``True`` at real positions; every row must have at least one real position.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["AdditivePool", "FastformerLayer", "SelfAttentionLayer", "masked_mean", "masked_softmax"]


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax over ``dim`` where ``mask`` is True; masked positions get weight 0."""
    return torch.softmax(logits.masked_fill(~mask, torch.finfo(logits.dtype).min), dim=dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` [B, L, D] over the real positions of ``mask`` [B, L] -> [B, D]."""
    weights = mask.unsqueeze(-1).to(x.dtype)
    return (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class AdditivePool(nn.Module):
    """Additive attention pooling [B, L, D] -> [B, D].

    Args:
        dim: D.
        hidden: width of the attention projection (NRMS/NAML use 200; we default to D).
    """

    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        self.proj = nn.Linear(dim, hidden or dim)
        self.query = nn.Linear(hidden or dim, 1, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = masked_softmax(self.query(torch.tanh(self.proj(x))).squeeze(-1), mask)  # [B, L]
        return torch.einsum("bl,bld->bd", weights, x)


class SelfAttentionLayer(nn.Module):
    """Multi-head self-attention over real positions, then residual, dropout and LayerNorm.

    Args:
        dim: D (divisible by ``heads``).
        heads: attention heads.
        dropout: dropout on attention weights and on the output.
    """

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} must be divisible by the number of attention heads {heads}")
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out, _ = self.attn(x, x, x, key_padding_mask=~mask, need_weights=False)
        return self.norm(x + self.drop(out))


class FastformerLayer(nn.Module):
    """One Fastformer block: additive-attention global query/key, residual, LayerNorm, feed-forward.

    Per head h (width d = D / heads): ``alpha_t = softmax_t(w_q . q_t / sqrt(d))``, ``g = sum_t alpha_t q_t``;
    ``p_t = g * k_t``; ``beta_t = softmax_t(w_k . p_t / sqrt(d))``, ``g' = sum_t beta_t p_t``;
    ``u_t = g' * v_t``; output ``W_o u_t + q_t``. Cost is linear in L.

    Args:
        dim: D (divisible by ``heads``).
        heads: heads.
        dropout: dropout on the attention output and the feed-forward output.
    """

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} must be divisible by the number of attention heads {heads}")
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.query_attn = nn.Linear(dim, heads)  # one additive score per head (block-diagonal in effect)
        self.key_attn = nn.Linear(dim, heads)
        self.out = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.norm2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def _pool(self, x: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-head additive pooling: x [B, L, H, d], scores [B, L, H] -> [B, 1, H, d]."""
        weights = masked_softmax(scores / math.sqrt(self.head_dim), mask.unsqueeze(-1), dim=1)
        return torch.einsum("blh,blhd->bhd", weights, x).unsqueeze(1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        split = (B, L, self.heads, self.head_dim)
        global_q = self._pool(q.view(split), self.query_attn(q), mask)  # [B, 1, H, d]
        p = global_q * k.view(split)  # [B, L, H, d]
        global_k = self._pool(p, self.key_attn(p.reshape(B, L, D)), mask)
        u = (global_k * v.view(split)).reshape(B, L, D)
        h = self.norm1(x + self.drop(self.out(u) + q))
        return self.norm2(h + self.drop(self.ffn(h)))
