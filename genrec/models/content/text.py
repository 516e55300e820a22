"""Item text -> one padded token-id row per item, tokenised once when a model is built.

Every content operator reads its items' tokens from a fixed matrix ``[N + 1, T]`` (row 0 is the
padding item), built here from ``ItemCatalog.texts()`` (``"Toy Story (1995). Genres: Animation,
Children's, Comedy."``) with a Hugging Face tokenizer. T is the longest tokenised text, capped at
``max_tokens`` (longer texts are truncated); shorter rows are right-padded and masked. A fixed T means
an item's tokens, and so its vector, never depend on which other items share its batch.

The operators that learn their word embeddings from scratch (CNN, self-attention, Fastformer) use
the WordPiece vocabulary of the bundled MiniLM tokenizer by default, *compacted* to the word pieces
that occur in the catalogue (ml-100k: 2,751 of 30,522), so the embedding table holds only rows that
can be trained; :func:`compact_vocabulary` renumbers them 1..V with 0 as padding. The pretrained
language-model operator keeps its own tokenizer's ids.
"""

from __future__ import annotations

import torch

from genrec.llm.pretrained import resolve_llm

__all__ = ["DEFAULT_TOKENIZER", "compact_vocabulary", "load_text_tokenizer", "tokenize_items"]

DEFAULT_TOKENIZER = "bundled:all-minilm-l6-v2"
"""The tokenizer of the learned-embedding content operators (MiniLM's uncased WordPiece)."""


def load_text_tokenizer(spec: str):
    """A Hugging Face tokenizer from ``bundled:<name>``, a folder or a hub id; pad token = eos if missing."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_llm(spec))
    except OSError as err:
        raise OSError(f"could not load the tokenizer {spec!r} ({err}); use 'bundled:all-minilm-l6-v2', a local "
                      "folder, or a hub id with network access") from err
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ValueError(f"the tokenizer {spec!r} has neither a pad nor an eos token; give it a pad token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def tokenize_items(texts: list[str], tokenizer, max_tokens: int,
                   add_special_tokens: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and mask of items 1..N (row 0 is the padding item).

    Args:
        texts: N non-empty strings, ``texts[i - 1]`` describing item i.
        tokenizer: a Hugging Face tokenizer.
        max_tokens: tokens kept per text.
        add_special_tokens: add the tokenizer's special tokens (``[CLS] ... [SEP]`` for BERT).

    Returns:
        ``(ids, mask)``: LongTensor [N + 1, T] right-padded with the pad id, BoolTensor [N + 1, T].
        Row 0 holds one masked-in pad token so that encoding it is harmless.
    """
    if not texts:
        raise ValueError("tokenize_items got no texts")
    empty = [i + 1 for i, text in enumerate(texts) if not isinstance(text, str) or not text.strip()]
    if empty:
        raise ValueError(f"{len(empty)} item(s) have no text, first item {empty[0]}; every item needs some text")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    encoded = tokenizer([tokenizer.pad_token] + list(texts), add_special_tokens=add_special_tokens, truncation=True,
                        max_length=max_tokens, padding=True, return_tensors="pt")
    ids, mask = encoded["input_ids"], encoded["attention_mask"].bool()
    ids[0], mask[0] = tokenizer.pad_token_id, False
    mask[0, 0] = True
    empty = (mask[1:].sum(1) == 0).nonzero()
    if len(empty):
        raise ValueError(f"item {int(empty[0]) + 1}'s text has no tokens: {texts[int(empty[0])]!r}")
    return ids, mask


def compact_vocabulary(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Renumbers the token ids in use at real positions to 1..V, padding to 0.

    Returns:
        ``(compact ids [N + 1, T], V)``.
    """
    used = torch.unique(ids[mask])
    compact = torch.searchsorted(used, ids.clamp(min=0)) + 1
    compact = torch.where(mask, compact, torch.zeros_like(compact))
    return compact, len(used)
