"""Trie-constrained decoding: a logits processor for HF ``generate`` and our own batched beam search.

Both restrict every step to the tokens that keep the generated prefix inside a
:class:`~genrec.decoding.trie.PrefixTrie`, so that every decoded sequence names a real item
(constrained beam search over semantic IDs as in TIGER, Rajput et al., NeurIPS 2023,
arXiv 2305.05065; over titles as in GENRE, De Cao et al., ICLR 2021, arXiv 2010.00904). The
allowed tokens of all B*K beams come from tensor lookups in the trie, not from a Python loop over
beams. An empty allowed set is an error, never a silent fall-back to unconstrained decoding.

* :class:`TrieLogitsProcessor` plugs into ``model.generate(logits_processor=...)``: at each step
  it walks the trie along each row's generated tokens and sets every other score to -inf.
* :func:`constrained_beam_search` is a deterministic beam search for models that decode exactly
  one trie sequence (e.g. TIGER's C semantic-ID levels): ``step_fn`` gives the next-token
  log-probabilities of all beams, and the search keeps, per batch row, the K best prefixes by the
  sum of their log-probabilities (no length penalty). It follows the trie incrementally (one edge
  per beam and step) and tells ``step_fn`` which parent each new beam came from, so a KV cache can
  be reordered instead of recomputed.

Shapes: B batch, K beams, L input length, T generated length (at most the trie's ``max_depth``),
V vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import LogitsProcessor

from genrec.decoding.trie import PrefixTrie

__all__ = ["StepFn", "TrieLogitsProcessor", "constrained_beam_search"]

StepFn = Callable[[torch.Tensor, Any, "torch.Tensor | None"], tuple[torch.Tensor, Any]]
"""``step_fn(tokens [B*K, t], state, beam_parents [B*K] or None) -> (log_probs [B*K, V], state)``."""


class TrieLogitsProcessor(LogitsProcessor):
    """Keeps only the scores of tokens that extend each row's generated tokens inside a trie.

    Prompts must be left-padded so that every row's prompt occupies exactly the first
    ``prompt_length`` columns of ``input_ids``; the tokens after them are the generated ones.
    At a complete sequence (a leaf of the trie) the only allowed token is ``eos_token_id``.

    Each call walks the whole generated prefix (T ``searchsorted`` lookups for all rows at once),
    so it needs no state and is unaffected by HF reordering beams between steps. The trie must be
    on the same device as ``input_ids`` (:meth:`PrefixTrie.to`).

    Args:
        trie: the valid token sequences.
        prompt_length: number of prompt columns in ``input_ids`` (>= 0).
        eos_token_id: token allowed (alone) after a complete sequence; ``None`` if the trie's
            sequences already end with an end-of-sequence token that stops generation.
    """

    supports_continuous_batching = False  # rows must share one prompt length

    def __init__(self, trie: PrefixTrie, prompt_length: int, eos_token_id: int | None = None):
        if not isinstance(trie, PrefixTrie) or len(trie) == 0:
            raise ValueError(f"TrieLogitsProcessor needs a non-empty PrefixTrie, got {trie!r}")
        if prompt_length < 0:
            raise ValueError(f"TrieLogitsProcessor prompt_length must be >= 0, got {prompt_length}")
        if eos_token_id is not None and eos_token_id < 0:
            raise ValueError(f"TrieLogitsProcessor eos_token_id must be >= 0 or None, got {eos_token_id}")
        self.trie, self.prompt_length, self.eos_token_id = trie, prompt_length, eos_token_id

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Masks disallowed tokens.

        Args:
            input_ids: LongTensor [B*K, L], left-padded prompts followed by the generated tokens.
            scores: FloatTensor [B*K, V], next-token scores (V may exceed the trie's vocabulary).

        Returns:
            A new FloatTensor [B*K, V]: ``scores`` where allowed, -inf elsewhere.

        Raises:
            ValueError: if ``input_ids`` is shorter than ``prompt_length``, or a row has no allowed
                token (its generated tokens left the trie, or completed a sequence while
                ``eos_token_id`` is None).
        """
        if input_ids.shape[1] < self.prompt_length:
            raise ValueError(f"TrieLogitsProcessor got input_ids of length {input_ids.shape[1]}, shorter than "
                             f"prompt_length {self.prompt_length}; left-pad prompts to prompt_length")
        generated = input_ids[:, self.prompt_length:]
        nodes = self.trie.walk(generated)
        allowed = self.trie.allowed_mask(nodes, scores.shape[-1])
        if self.eos_token_id is not None:
            allowed[:, self.eos_token_id] |= self.trie.is_leaf(nodes)
        empty = ~allowed.any(dim=1)
        if empty.any():
            row = int(empty.nonzero()[0])
            reason = ("left the trie" if nodes[row] < 0
                      else "form a complete sequence and eos_token_id is None")
            raise ValueError(f"TrieLogitsProcessor: row {row} generated tokens {generated[row].tolist()}, "
                             f"which {reason}, so no token is allowed; check prompt_length "
                             f"({self.prompt_length}) and that prompts are left-padded to it")
        return scores.masked_fill(~allowed, float("-inf"))


def constrained_beam_search(step_fn: StepFn, trie: PrefixTrie, batch_size: int, num_beams: int,
                            state: Any = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Deterministic beam search whose beams stay inside ``trie``.

    Every step t = 0 .. trie.max_depth - 1 calls

        ``log_probs, state = step_fn(tokens, state, beam_parents)``

    with ``tokens`` LongTensor [B*K, t] (rows ``b*K .. b*K+K-1`` are the beams of batch row b) and
    ``beam_parents`` LongTensor [B*K]: beam ``i`` of this step extends row ``beam_parents[i]`` of the
    previous step, so ``step_fn`` should first reorder its per-row state (e.g. a KV cache) with
    ``state[beam_parents]`` and then consume ``tokens[:, -1]``. At t = 0 ``beam_parents`` is None
    and ``state`` is the caller's initial state. ``log_probs`` must be [B*K, V] with V >= the
    trie's ``vocab_size``. Rows whose beam has finished or died hold -1 in ``tokens``; their
    ``log_probs`` are ignored, but ``step_fn`` must accept the -1 (e.g. map it to a padding id).

    At t = 0 only beam 0 of each batch row is live, so the K beams are distinct. At each step a
    live beam's candidates are its score plus the log-probabilities of the tokens the trie allows
    (-inf elsewhere); a beam that has completed a sequence (a leaf, for tries with sequences of
    different lengths) has one candidate, itself with its score unchanged and token -1. The K best
    of the K * (V + 1) candidates of each batch row become the new beams. The search stops early,
    without calling ``step_fn`` again, once no beam can grow.

    Args:
        step_fn: next-token log-probabilities of all beams, as above.
        trie: the valid sequences and their values, on the device ``step_fn`` returns.
        batch_size: B >= 1.
        num_beams: K >= 1.
        state: initial state handed to the first ``step_fn`` call.

    Returns:
        ``(values, scores, tokens)``, beams sorted by score, best first:
        values LongTensor [B, K], the trie value of each beam's sequence; scores FloatTensor
        [B, K], the sum of its step log-probabilities; tokens LongTensor [B, K, T] with
        T = ``trie.max_depth``, padded with -1. When a batch row has fewer than K sequences
        reachable with finite score, its missing beams have value -1, score -inf and tokens -1.

    Raises:
        ValueError: for B or K < 1, ``log_probs`` of the wrong shape, or a live beam whose
            log-probabilities are NaN, or -inf at every token the trie allows.
    """
    if batch_size < 1 or num_beams < 1:
        raise ValueError(f"constrained_beam_search needs batch_size >= 1 and num_beams >= 1, "
                         f"got {batch_size} and {num_beams}")
    rows, device = batch_size * num_beams, trie.device
    nodes = torch.zeros(rows, dtype=torch.long, device=device)
    scores = torch.full((batch_size, num_beams), float("-inf"), device=device)
    scores[:, 0] = 0.0
    tokens = torch.full((rows, trie.max_depth), -1, dtype=torch.long, device=device)
    first_row = torch.arange(batch_size, device=device)[:, None] * num_beams  # [B, 1]
    beam_parents = None
    for t in range(trie.max_depth):
        finished = trie.is_leaf(nodes)
        live = (nodes >= 0) & ~finished & torch.isfinite(scores.view(-1))
        if not live.any():
            break
        log_probs, state = step_fn(tokens[:, :t], state, beam_parents)
        step = _allowed_log_probs(log_probs, trie, nodes, rows)  # [B*K, V]
        _check_live_beams(step, live, tokens[:, :t], num_beams)
        stay = torch.where(finished, 0.0, float("-inf"))[:, None]
        candidates = scores.view(rows, 1) + torch.cat([step, stay], dim=1)  # [B*K, V + 1]
        width = candidates.shape[1]
        scores, best = candidates.view(batch_size, num_beams * width).topk(num_beams, dim=1)
        beam_parents = (first_row + best // width).view(-1)
        token, alive = (best % width).view(-1), torch.isfinite(scores).view(-1)
        moves = alive & (token < width - 1)
        token = torch.where(moves, token, -1)
        parent_nodes = nodes[beam_parents]
        nodes = torch.where(moves, trie.next_nodes(parent_nodes, token), torch.where(alive, parent_nodes, -1))
        tokens = torch.where(alive[:, None], tokens[beam_parents], -1)
        tokens[:, t] = token
    values = trie.values(nodes).view(batch_size, num_beams)
    return values, scores, tokens.view(batch_size, num_beams, trie.max_depth)


def _allowed_log_probs(log_probs: torch.Tensor, trie: PrefixTrie, nodes: torch.Tensor,
                       rows: int) -> torch.Tensor:
    """``log_probs`` [B*K, V] as float32 where the trie allows the token at each beam's node, -inf elsewhere."""
    if log_probs.ndim != 2 or log_probs.shape[0] != rows or log_probs.shape[1] < trie.vocab_size:
        raise ValueError(f"step_fn must return log_probs of shape [B*K, V] = [{rows}, >= {trie.vocab_size}] "
                         f"(V at least the trie's vocab_size), got {tuple(log_probs.shape)}")
    allowed = trie.allowed_mask(nodes, log_probs.shape[1])
    return log_probs.float().masked_fill(~allowed, float("-inf"))


def _check_live_beams(step: torch.Tensor, live: torch.Tensor, tokens: torch.Tensor, num_beams: int) -> None:
    """Raises ValueError if a live beam's allowed log-probs contain NaN or are all -inf."""
    bad = live & (step.isnan().any(dim=1) | ~torch.isfinite(step).any(dim=1))
    if bad.any():
        row = int(bad.nonzero()[0])
        raise ValueError(f"constrained_beam_search: beam {row % num_beams} of batch row {row // num_beams} "
                         f"(tokens {tokens[row].tolist()}) has no usable next token: step_fn's log-probs are "
                         "NaN, or -inf at every token the trie allows")
