"""Soft tokens: vectors that enter a causal LLM through ``inputs_embeds`` instead of its vocabulary.

Shared by the models that feed a recommender's vectors to an LLM without resizing its vocabulary
(so the HF checkpoint, its tokenizer and its LM head stay untouched):

* CLLM4Rec (:mod:`genrec.models.cllm4rec`): every position is a soft token (a user or item table row
  projected to the LLM width); it runs the decoder stack alone (:func:`decoder_stack`,
  :func:`run_decoder`) and scales its projection to the word embeddings (:func:`word_embedding_std`).
* RecExplainer (:mod:`genrec.explain.model`): text prompts with ``<user>`` / ``<item>`` placeholder
  positions; the word embedding of an anchor token there gets a connector's output added
  (:func:`placeholder_embeds`), as in RecAI's RecExplainer intention mode.

Placeholders are token ids at or above the vocabulary size V (``V + slot``), so they can never clash
with a real token; :func:`placeholder_embeds` looks up an ordinary anchor token at those positions and
adds (or puts in place of its embedding) the next vector of that slot, in row-major order.

Shapes: B batch, L sequence length, D LLM width, M placeholder positions of one slot.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["decoder_stack", "placeholder_embeds", "run_decoder", "word_embedding_std"]

MODES = ("add", "replace")


def decoder_stack(causal_lm: nn.Module) -> nn.Module:
    """The decoder stack of a ``*ForCausalLM`` (``LlamaModel``, ``GPT2Model``, ...), without its LM head."""
    backbone = getattr(causal_lm, "base_model", None)
    if backbone is None or backbone is causal_lm or not hasattr(backbone, "get_input_embeddings"):
        raise ValueError(f"cannot find the decoder stack of {type(causal_lm).__name__} (no base_model); "
                         "soft tokens need a Hugging Face *ForCausalLM model")
    return backbone


def word_embedding_std(llm: nn.Module) -> float:
    """Standard deviation of the LLM's word-embedding entries: the scale soft tokens should start at."""
    return float(llm.get_input_embeddings().weight.detach().float().std())


def run_decoder(decoder: nn.Module, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Last hidden states [B, L, D] of a decoder stack fed ``inputs_embeds`` [B, L, D] (cast to its dtype)."""
    dtype = decoder.get_input_embeddings().weight.dtype
    return decoder(inputs_embeds=inputs_embeds.to(dtype), attention_mask=attention_mask,
                   use_cache=False).last_hidden_state


def placeholder_embeds(word_embeddings: nn.Embedding, input_ids: torch.Tensor, anchors: Mapping[int, int],
                       vectors: Mapping[int, torch.Tensor], mode: str = "add") -> torch.Tensor:
    """Input embeddings [B, L, D] of token ids with placeholder positions filled by soft vectors.

    Args:
        word_embeddings: the LLM's input embedding table [V, D].
        input_ids: LongTensor [B, L]; ids ``>= V`` are placeholders, each a key of ``anchors``.
        anchors: placeholder id -> the real token id looked up at its positions (e.g. the token
            ``" user"``), so an ``add`` placeholder starts from a word the LLM knows.
        vectors: placeholder id -> [M, D] vectors, one per position of that placeholder in
            ``input_ids``, in row-major order (batch row, then position). A placeholder absent from
            ``vectors`` keeps the anchor's embedding alone.
        mode: ``add`` (anchor embedding + vector, RecExplainer's choice) or ``replace`` (the vector alone).

    Raises:
        ValueError: an unknown placeholder id, a vector count that differs from the positions, or an
            unknown ``mode``.
    """
    if mode not in MODES:
        raise ValueError(f"unknown soft-token mode {mode!r}; use one of {', '.join(MODES)}")
    vocab = word_embeddings.num_embeddings
    lookup = input_ids.clone()
    for slot, anchor in anchors.items():
        if slot < vocab or not 0 <= anchor < vocab:
            raise ValueError(f"placeholder id {slot} must be >= the vocabulary size {vocab} and its anchor {anchor} "
                             "a real token id")
        lookup[input_ids == slot] = anchor
    if (lookup >= vocab).any():
        unknown = sorted(set(input_ids[lookup >= vocab].tolist()))
        raise ValueError(f"token ids {unknown[:5]} are outside the vocabulary ({vocab}) and not known placeholders "
                         f"({sorted(anchors)})")
    embeds = word_embeddings(lookup)
    for slot, vector in vectors.items():
        where = input_ids == slot  # [B, L]
        count = int(where.sum())
        if vector.shape[0] != count:
            raise ValueError(f"placeholder {slot} occurs {count} times in the batch but got {vector.shape[0]} vectors")
        if count == 0:
            continue
        vector = vector.to(embeds.dtype)
        embeds = embeds.masked_scatter(where[..., None], (vector if mode == "replace" else embeds[where] + vector))
    return embeds
