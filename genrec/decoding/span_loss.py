"""RecLM-cgen's scope-mask training loss: inside item spans, cross-entropy over the trie's choices only.

RecLM-cgen (arXiv 2505.03336) trains on answers whose items are written ``<SOI>title<EOI>``.
Free-text positions take the ordinary next-token cross-entropy. At a position inside a span
(its input token is ``<SOI>`` or a title token of the open span), the tokens the title trie does not
allow after the span's prefix are set to -inf before the softmax, so the loss only asks the model
to choose among valid continuations, the same set the constrained decoder
(:class:`~genrec.decoding.span_constraints.SpanLogitsProcessor`) leaves it at inference. An
optional focal weight ``(1 - p_target) ** gamma`` (RecLM-cgen's option) scales each position.

The head runs on the labelled positions only (the decoder/head split of
:mod:`genrec.llm.finetune`), so no [B, L, V] logits are built. Works on padded rows and on packed
rows (``position_ids`` restarting at 0 for each example: a span never crosses an example).

Shapes: B rows, L length, N labelled positions, V vocabulary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from genrec.decoding.title_trie import TitleTrie
from genrec.llm.finetune import labelled_positions, split_causal_lm

__all__ = ["scope_mask_loss", "span_nodes"]


def span_nodes(input_ids: torch.Tensor, title_trie: TitleTrie,
               position_ids: torch.Tensor | None = None) -> torch.Tensor:
    """LongTensor [B, L]: the trie node reached after each input token inside an open span, else -1.

    ``<SOI>`` moves to the root (node 0); a title token follows its edge; ``<EOI>`` and an example
    boundary (``position_ids == 0``) close the span. A token that leaves the trie gives -1.
    """
    trie = title_trie.trie
    nodes = torch.full(input_ids.shape, -1, dtype=torch.long, device=input_ids.device)
    current = torch.full((input_ids.shape[0],), -1, dtype=torch.long, device=input_ids.device)
    for t in range(input_ids.shape[1]):
        token = input_ids[:, t]
        if position_ids is not None:
            current = torch.where(position_ids[:, t] == 0, -1, current)
        step = trie.next_nodes(current, token.clamp(min=0, max=trie.vocab_size - 1))
        current = torch.where(token == title_trie.soi_id, 0,
                              torch.where((token == title_trie.eoi_id) | (current < 0), -1, step))
        nodes[:, t] = current
    return nodes


def scope_mask_loss(llm: torch.nn.Module, input_ids: torch.Tensor, labels: torch.Tensor, title_trie: TitleTrie,
                    attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                    label_positions: torch.Tensor | None = None, focal_gamma: float = 0.0) -> torch.Tensor:
    """Mean next-token cross-entropy over labelled positions, trie-masked inside item spans.

    Args:
        llm: a transformers causal LM (peft-wrapped or not).
        input_ids, labels: LongTensor [B, L]; labels :data:`~genrec.llm.finetune.IGNORE` where no loss.
        title_trie: the catalogue trie (span tokens, allowed continuations).
        attention_mask: [B, L] for padded rows; ``None`` for packed rows.
        position_ids: [B, L], restarting at 0 for each packed example.
        label_positions: :func:`~genrec.llm.finetune.labelled_positions` of ``labels`` (made with the batch).
        focal_gamma: focal exponent; 0 is plain cross-entropy.

    Returns:
        A scalar (0, attached to the graph, when nothing is labelled).

    Raises:
        ValueError: a labelled token inside a span is not a valid continuation (the training text
            names an item that is not in the catalogue's trie).
    """
    if focal_gamma < 0:
        raise ValueError(f"focal_gamma must be >= 0, got {focal_gamma}")
    if label_positions is None:
        label_positions = labelled_positions(labels)
    targets = labels[:, 1:].reshape(-1).index_select(0, label_positions)  # [N]
    parts = split_causal_lm(llm)
    if parts is None:
        logits = llm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                     use_cache=False).logits[:, :-1]
        logits = logits.reshape(-1, logits.shape[-1]).index_select(0, label_positions).float()
    else:
        decoder, head = parts
        hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         use_cache=False).last_hidden_state
        rows = hidden[:, :-1].reshape(-1, hidden.shape[-1]).index_select(0, label_positions)
        logits = head(rows).float()  # [N, V]
    if label_positions.numel() == 0:
        return logits.sum() * 0.0
    nodes = span_nodes(input_ids, title_trie, position_ids)[:, :-1].reshape(-1).index_select(0, label_positions)
    inside = (nodes >= 0).nonzero().squeeze(1)
    if inside.numel():
        allowed = title_trie.trie.allowed_mask(nodes[inside], logits.shape[-1])
        ok = allowed.gather(1, targets[inside, None]).squeeze(1)
        if not ok.all():
            bad = int(inside[~ok][0])
            raise ValueError(f"scope_mask_loss: labelled token {int(targets[bad])} inside an item span is not a "
                             "continuation of any catalogue title; write spans only around titles of this "
                             "catalogue (TitleTrie.span_text)")
        logits = logits.index_put((inside,), logits[inside].masked_fill(~allowed, float("-inf")))
    log_probs = F.log_softmax(logits, dim=-1).gather(1, targets[:, None]).squeeze(1)  # [N]
    losses = -log_probs
    if focal_gamma > 0:
        losses = losses * (1 - log_probs.exp()).pow(focal_gamma)
    return losses.mean()

