"""Content operators with learned word embeddings: item text -> item vector [D].

Every content operator is built as ``Operator(texts=..., dim=D)`` by
:class:`genrec.models.content.ContentRecommender` (the texts and D come from code, the rest from gin)
and maps item indices to vectors: ``forward(items [n]) -> [n, D]``. It tokenises the catalogue once
(:mod:`genrec.models.content.text`) and keeps the token matrix as a non-persistent buffer.

* :class:`CNNContent` (NAML / LSTUR news encoder, Wu et al. 2019): word embeddings -> dropout ->
  1-D convolution (window 3) -> ReLU -> dropout -> additive attention pooling.
* :class:`AttentionContent` (NRMS news encoder, Wu et al. 2019): word embeddings -> dropout ->
  multi-head self-attention (residual + LayerNorm) -> additive attention pooling.
* :class:`FastformerContent` (Wu et al. 2021): word + position embeddings -> Fastformer blocks ->
  additive attention pooling.

The pretrained language-model operator is in :mod:`genrec.models.content.lm`. Legommenders embeds
GloVe vectors; we learn the table from scratch over a compacted WordPiece vocabulary (see
:mod:`genrec.models.content.text`), because no word-vector asset is available offline.
"""

from __future__ import annotations

import gin
import torch
from torch import nn

from genrec.models.content.layers import AdditivePool, FastformerLayer, SelfAttentionLayer
from genrec.models.content.text import DEFAULT_TOKENIZER, compact_vocabulary, load_text_tokenizer, tokenize_items

__all__ = ["AttentionContent", "CNNContent", "ContentOperator", "FastformerContent"]


class ContentOperator(nn.Module):
    """Base of content operators: ``forward(items [n]) -> [n, D]``; ``dim`` is D.

    Operators that keep a token matrix (``token_ids``, ``token_mask`` [N + 1, T]) cut each call's
    tokens to the longest text among its items (:meth:`tokens`): padding is masked everywhere, so
    this changes no result, only the work; :meth:`lengths` lets the evaluation cache batch items of
    similar length together.
    """

    dim: int
    token_ids: torch.Tensor
    token_mask: torch.Tensor

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def tokens(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and mask [n, t] of ``items`` [n], t the longest of their texts."""
        mask = self.token_mask[items]
        width = max(1, int(mask.sum(1).max())) if len(items) else 1
        return self.token_ids[items, :width], mask[:, :width]

    def lengths(self) -> torch.Tensor | None:
        """Tokens per item [N + 1] (``None`` when the operator keeps no token matrix)."""
        mask = getattr(self, "token_mask", None)
        return None if mask is None else mask.sum(1)


class _LearnedTokens(ContentOperator):
    """Tokenises the catalogue once (compacted vocabulary) and owns the word-embedding table."""

    def __init__(self, texts: list[str], dim: int, tokenizer: str, max_tokens: int, dropout: float):
        super().__init__(dim)
        ids, mask = tokenize_items(texts, load_text_tokenizer(tokenizer), max_tokens)
        ids, vocab = compact_vocabulary(ids, mask)
        self.register_buffer("token_ids", ids, persistent=False)  # [N + 1, T]
        self.register_buffer("token_mask", mask, persistent=False)
        self.vocab_size = vocab
        self.embedding = nn.Embedding(vocab + 1, dim, padding_idx=0)
        self.drop = nn.Dropout(dropout)

    def embed(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Word embeddings [n, t, D] (dropout applied) and the mask [n, t] of ``items`` [n]."""
        ids, mask = self.tokens(items)
        return self.drop(self.embedding(ids)), mask


@gin.configurable(denylist=["texts", "dim"])
class CNNContent(_LearnedTokens):
    """NAML/LSTUR-style CNN text encoder.

    Args:
        texts: N item texts (item i is ``texts[i - 1]``).
        dim: D, the width of word embeddings, filters and output.
        tokenizer: tokenizer spec whose word pieces are embedded.
        max_tokens: tokens kept per text.
        window: convolution window (odd).
        dropout: dropout on word embeddings and on the convolution output.
    """

    def __init__(self, texts: list[str], dim: int, tokenizer: str = DEFAULT_TOKENIZER, max_tokens: int = 32,
                 window: int = 3, dropout: float = 0.2):
        super().__init__(texts, dim, tokenizer, max_tokens, dropout)
        if window < 1 or window % 2 == 0:
            raise ValueError(f"CNNContent.window must be a positive odd number, got {window}")
        self.conv = nn.Conv1d(dim, dim, window, padding=window // 2)
        self.pool = AdditivePool(dim)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        x, mask = self.embed(items)
        x = x * mask.unsqueeze(-1)  # padded positions contribute zeros to the convolution
        h = self.drop(torch.relu(self.conv(x.transpose(1, 2)).transpose(1, 2)))
        return self.pool(h, mask)


@gin.configurable(denylist=["texts", "dim"])
class AttentionContent(_LearnedTokens):
    """NRMS-style text encoder: multi-head self-attention + additive attention.

    Args:
        texts: N item texts.
        dim: D.
        tokenizer: tokenizer spec whose word pieces are embedded.
        max_tokens: tokens kept per text.
        heads: attention heads (D must be divisible by it).
        layers: self-attention layers.
        positions: add learned position embeddings (NRMS has none).
        dropout: dropout on word embeddings and attention.
    """

    def __init__(self, texts: list[str], dim: int, tokenizer: str = DEFAULT_TOKENIZER, max_tokens: int = 32,
                 heads: int = 4, layers: int = 1, positions: bool = False, dropout: float = 0.2):
        super().__init__(texts, dim, tokenizer, max_tokens, dropout)
        self.positions = nn.Embedding(self.token_ids.shape[1], dim) if positions else None
        self.layers = nn.ModuleList(SelfAttentionLayer(dim, heads, dropout) for _ in range(layers))
        self.pool = AdditivePool(dim)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        x, mask = self.embed(items)
        if self.positions is not None:
            x = x + self.positions.weight[:x.shape[1]]
        for layer in self.layers:
            x = layer(x, mask)
        return self.pool(x, mask)


@gin.configurable(denylist=["texts", "dim"])
class FastformerContent(_LearnedTokens):
    """Fastformer text encoder: word + position embeddings, Fastformer blocks, additive pooling.

    Args:
        texts: N item texts.
        dim: D.
        tokenizer: tokenizer spec whose word pieces are embedded.
        max_tokens: tokens kept per text.
        heads: heads (D must be divisible by it).
        layers: Fastformer blocks.
        dropout: dropout on embeddings and inside the blocks.
    """

    def __init__(self, texts: list[str], dim: int, tokenizer: str = DEFAULT_TOKENIZER, max_tokens: int = 32,
                 heads: int = 4, layers: int = 1, dropout: float = 0.2):
        super().__init__(texts, dim, tokenizer, max_tokens, dropout)
        self.positions = nn.Embedding(self.token_ids.shape[1], dim)
        self.layers = nn.ModuleList(FastformerLayer(dim, heads, dropout) for _ in range(layers))
        self.pool = AdditivePool(dim)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        x, mask = self.embed(items)
        x = x + self.positions.weight[:x.shape[1]]
        for layer in self.layers:
            x = layer(x, mask)
        return self.pool(x, mask)
