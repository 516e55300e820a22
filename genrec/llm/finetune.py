"""The fast causal-LM fine-tuning path shared by LC-Rec, CLLM4Rec and the content LM encoder.

Instruction tuning takes its loss on the response tokens only, a small share of each sequence
(LC-Rec's seqrec: 5 of ~120 tokens). The usual ``model(..., labels=labels).loss`` still applies the
output head to every position: a [B, L, V] logits tensor (V = 49k for SmolLM2), its float copy, its
log-softmax and their gradients: about a fifth of a 135M model's FLOPs and a large share of its
activation memory. :func:`causal_lm_loss` runs the decoder, gathers the hidden states of the positions that
predict a label, and applies the head and the cross-entropy to those rows only, in chunks of
``chunk_size`` rows (each chunk recomputed in the backward pass when there is more than one), so
memory does not grow with B x L x V. The value equals the transformers loss (mean token
cross-entropy over labelled positions, logits in float32).

:func:`pack_examples` builds padding-free batches: the examples of a batch are laid end to end
in rows of at most ``max_tokens`` tokens, with ``position_ids`` restarting at 0 for each example and
no ``attention_mask``. transformers (5.x: ``masking_utils.find_packed_sequence_indices``) then
builds a block-diagonal causal mask from the restarts, for ``sdpa``, ``eager`` and flash attention
alike, so no example attends to another and every position sees the same context as unpacked.
Batches also carry ``label_positions`` (:func:`labelled_positions`, made on the host), so selecting
the labelled rows needs no device-to-host sync.

Shapes: B batch (rows), L sequence length, N labelled positions, V vocabulary, D model width.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

__all__ = ["IGNORE", "causal_lm_loss", "enable_activation_checkpointing", "batch_examples", "labelled_positions", "pack_examples",
           "pad_examples", "split_causal_lm"]

IGNORE = -100
"""Label of positions that take no loss (transformers' ``ignore_index``)."""

# Config attributes of architectures whose head output is transformed after the linear layer
# (Gemma 2's soft-capping, Cohere's logit scale): their loss goes through the model's own forward.
_HEAD_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier_scale")


def split_causal_lm(llm: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """``(decoder, head)`` of a transformers causal LM (peft-wrapped or not); ``None`` if it has no plain head.

    The decoder maps token ids to final hidden states [B, L, D] (``LlamaModel``, ``GPT2Model``, ...),
    the head maps those to logits. Adapters that peft injected into either stay in place.
    """
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    decoder = getattr(base, "base_model", None)
    if head is None or decoder is None or decoder is base:
        return None
    if any(getattr(base.config, name, None) not in (None, 1, 1.0) for name in _HEAD_TRANSFORMS):
        return None
    return decoder, head


def _chunk_loss(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of ``head(hidden)`` [n, V] (in float32) against ``targets`` [n]."""
    return F.cross_entropy(head(hidden).float(), targets, reduction="sum")


def labelled_positions(labels: torch.Tensor) -> torch.Tensor:
    """Flat indices [N] into the [B, L - 1] grid of positions whose next token is labelled.

    Built with the batch (on the host), they let :func:`causal_lm_loss` select the labelled rows
    without a device-to-host sync (a boolean mask on the device would need one to learn N).
    """
    return torch.nonzero(labels[:, 1:].reshape(-1) != IGNORE).squeeze(1)


def causal_lm_loss(llm: torch.nn.Module, input_ids: torch.Tensor, labels: torch.Tensor,
                   attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                   label_positions: torch.Tensor | None = None, chunk_size: int = 4096,
                   inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled positions, the head applied to those only.

    Equal to ``llm(input_ids, attention_mask=..., labels=labels).loss`` (labels shifted inside: the
    hidden state at position t predicts ``labels[:, t + 1]``), without building [B, L, V] logits.

    Args:
        llm: a transformers causal LM, optionally wrapped by peft.
        input_ids: LongTensor [B, L].
        labels: LongTensor [B, L], :data:`IGNORE` where no loss is taken.
        attention_mask: [B, L] 1 for real tokens (padded batches); ``None`` for packed batches.
        position_ids: LongTensor [B, L]; packed batches restart them at 0 for each example.
        label_positions: :func:`labelled_positions` of ``labels``, made with the batch; ``None``:
            computed here (a device sync on a GPU).
        chunk_size: labelled positions per head + cross-entropy chunk; with more than one chunk,
            each is recomputed in the backward pass, so at most [chunk_size, V] logits are alive.
        inputs_embeds: [B, L, D] input embeddings used instead of looking up ``input_ids`` (soft tokens,
            :mod:`genrec.llm.soft_tokens`); ``input_ids`` then only gives the shape.

    Returns:
        A scalar; 0 (still attached to the graph) when no position is labelled.
    """
    parts = split_causal_lm(llm)
    inputs = {"input_ids": input_ids} if inputs_embeds is None else {"inputs_embeds": inputs_embeds}
    if parts is None:  # a head with a non-linear transform: the model's own loss
        return llm(**inputs, attention_mask=attention_mask, position_ids=position_ids, labels=labels,
                   use_cache=False).loss
    decoder, head = parts
    hidden = decoder(**inputs, attention_mask=attention_mask, position_ids=position_ids,
                     use_cache=False).last_hidden_state  # [B, L, D]
    if label_positions is None:
        label_positions = labelled_positions(labels)
    rows = hidden[:, :-1].reshape(-1, hidden.shape[-1]).index_select(0, label_positions)  # [N, D]
    targets = labels[:, 1:].reshape(-1).index_select(0, label_positions)
    count = label_positions.numel()
    if count == 0:
        return hidden.sum() * 0.0
    if count <= chunk_size:
        return _chunk_loss(head, rows, targets) / count
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, count, chunk_size):
        total = total + checkpoint(_chunk_loss, head, rows[start:start + chunk_size],
                                   targets[start:start + chunk_size], use_reentrant=False)
    return total / count


def pad_examples(examples: Sequence[tuple[np.ndarray, np.ndarray]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` [B, L] of (ids, labels) examples."""
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for b, (ids, label) in enumerate(examples):
        input_ids[b, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
        labels[b, : len(ids)] = torch.as_tensor(label, dtype=torch.long)
        mask[b, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def pack_examples(examples: Sequence[tuple[np.ndarray, np.ndarray]], pad_id: int,
                  max_tokens: int | None = None) -> dict[str, torch.Tensor]:
    """Packs (ids, labels) examples end to end into rows: ``input_ids``, ``labels``, ``position_ids`` [B, L]
    and their ``label_positions`` [N].

    The examples go into the fewest rows of at most ``max_tokens`` tokens that balance (``None``:
    all in one row; when an example is longer than ``max_tokens``, rows may be as long as it):
    longest example first, each into the row with the fewest tokens so far, so rows come out of
    nearly equal length and little padding is left. Rows are right-padded to the longest with pad
    tokens that take no loss, each of which is its own one-token sequence. The first token of every
    example takes no loss, so no label is predicted across a boundary.

    Short rows keep attention cheap: attention runs over whole rows (masked to block-diagonal), so
    its cost grows with the row length, while the linear layers only see real tokens.
    """
    lengths = np.array([len(ids) for ids, _ in examples])
    if not len(lengths) or lengths.min() < 1:
        raise ValueError("pack_examples needs at least one example and no empty one")
    limit = int(lengths.sum()) if max_tokens is None else max(int(max_tokens), int(lengths.max()))
    order = np.argsort(-lengths, kind="stable")
    count = -(-int(lengths.sum()) // limit)
    while True:  # ends at the latest with one example per row, each at most ``limit`` long
        loads = np.zeros(count, dtype=np.int64)
        bins: list[list[int]] = [[] for _ in range(count)]
        for i in order:
            row = int(np.argmin(loads))
            bins[row].append(int(i))
            loads[row] += lengths[i]
        if loads.max() <= limit:
            break
        count += 1
    width = int(loads.max())
    input_ids = torch.full((len(bins), width), pad_id, dtype=torch.long)
    labels = torch.full((len(bins), width), IGNORE, dtype=torch.long)
    positions = torch.zeros((len(bins), width), dtype=torch.long)
    for b, members in enumerate(bins):
        at = 0
        for i in sorted(members):  # dataset order within a row
            ids, label = examples[i]
            n = len(ids)
            input_ids[b, at:at + n] = torch.as_tensor(ids, dtype=torch.long)
            labels[b, at:at + n] = torch.as_tensor(label, dtype=torch.long)
            labels[b, at] = IGNORE
            positions[b, at:at + n] = torch.arange(n)
            at += n
    return {"input_ids": input_ids, "labels": labels, "position_ids": positions,
            "label_positions": labelled_positions(labels)}


def enable_activation_checkpointing(model) -> None:
    """Turns on activation (gradient) checkpointing of a transformers model, non-reentrant.

    Later transformers releases of the pinned range (5.24) call it ``activation_checkpointing_enable``
    and deprecate ``gradient_checkpointing_enable`` (a FutureWarning, removal in v6); 5.17 and 5.18
    have only the old name.
    """
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def batch_examples(examples: Sequence[tuple[np.ndarray, np.ndarray]], pad_id: int, packing: bool,
                   pack_tokens: int | None = None) -> dict[str, torch.Tensor]:
    """A training batch of tokenized (ids, labels) examples: packed (:func:`pack_examples`) or right-padded
    (:func:`pad_examples`), both with ``label_positions`` (so the loss needs no device sync)."""
    if packing:
        return pack_examples(examples, pad_id, pack_tokens)
    batch = pad_examples(examples, pad_id)
    return {**batch, "label_positions": labelled_positions(batch["labels"])}
