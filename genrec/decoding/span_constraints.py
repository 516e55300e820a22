"""RecLM-cgen's span-aware constraint: free text stays free, item spans spell catalogue titles.

:class:`SpanLogitsProcessor` is a transformers ``LogitsProcessor`` for ``generate`` (greedy,
sampling or beam search). For every row it reads the tokens generated so far (after the prompt,
up to the first eos) and finds whether the last ``<SOI>`` is still open:

* **outside a span** the scores are returned unchanged (free text, and the choice to open a span,
  are the model's), except that ``<SOI>`` is masked once every catalogue item has been named;
* **inside a span** only the children of the span's trie node are allowed
  (:class:`~genrec.decoding.title_trie.TitleTrie`), so the span can only become a catalogue title
  and ``<EOI>`` is the only token once a title is complete (unless a longer title continues it);
* **no repeats**: an item already named in this answer is removed, by per-node counts: a child is
  allowed only while fewer of its subtree's items have been named than it holds (RecLM-cgen keeps
  the same per-node visit counts). A span whose every continuation is used up raises ValueError,
  never a silent fall-back to free text.
* **excluded items** (``excluded``, one list per prompt, e.g. the user's history) count as named
  from the start, so no span names them.

``item_count`` turns on list mode (RecLM-gen's "recommend n items" answers, and untuned models
that never open a span by themselves): the answer is forced to be exactly ``item_count`` spans
separated by ``separator_id`` and followed by the eos token, i.e. ``<SOI>t1<EOI>\\n<SOI>t2<EOI>...``.

The processor is stateless (each call re-reads ``input_ids``), so it is unaffected by beam
reordering. Masks are built with tensor lookups; only the scan of each row's tokens for its span
state is a Python loop (O(generated tokens) per row and step).

Shapes: R rows (batch x beams), L prompt + generated length, V vocabulary, M trie nodes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import LogitsProcessor

from genrec.decoding.title_trie import TitleTrie

__all__ = ["SpanLogitsProcessor", "span_states"]


def span_states(generated: torch.Tensor, title_trie: TitleTrie, eos_token_id: int | None):
    """Per row: ``(finished, open span tokens or None, named items, last token or None)``.

    Args:
        generated: LongTensor [R, T], the generated tokens of each row.
        title_trie: the catalogue trie (span token ids, items by tokens).
        eos_token_id: generation stops at it (the row is finished); ``None``: never.
    """
    states = []
    for row in generated.tolist():
        finished, span, items, last = False, None, [], None
        for token in row:
            if token == eos_token_id:
                finished = True
                break
            if token == title_trie.soi_id:
                span = []
            elif token == title_trie.eoi_id:
                if span is not None:
                    item = title_trie.item_of_tokens(span)
                    if item > 0:
                        items.append(item)
                span = None
            elif span is not None:
                span.append(token)
            last = token
        states.append((finished, span, items, last))
    return states


class SpanLogitsProcessor(LogitsProcessor):
    """Constrains item spans to catalogue titles, without repeats; leaves free text untouched.

    Args:
        title_trie: the catalogue's :class:`TitleTrie` (on the device of the scores).
        prompt_length: columns of ``input_ids`` before the generated tokens (prompts left-padded).
        eos_token_id: the end of generation (rows after it are left alone); required in list mode.
        item_count: list mode with exactly this many items (see the module docstring); ``None``: free.
        separator_id: the token between items in list mode (e.g. the newline token).
        excluded: per prompt, items never to name (e.g. the user's history), counted as named from the
            start; rows of one prompt (beams, returned sequences) are consecutive, as ``generate`` lays
            them out. ``None``: none.
    """

    supports_continuous_batching = False

    def __init__(self, title_trie: TitleTrie, prompt_length: int, eos_token_id: int | None = None,
                 item_count: int | None = None, separator_id: int | None = None,
                 excluded: Sequence[Sequence[int]] | None = None):
        if not isinstance(title_trie, TitleTrie) or len(title_trie) == 0:
            raise ValueError(f"SpanLogitsProcessor needs a non-empty TitleTrie, got {title_trie!r}")
        if prompt_length < 0:
            raise ValueError(f"SpanLogitsProcessor prompt_length must be >= 0, got {prompt_length}")
        if item_count is not None:
            if not 1 <= item_count <= len(title_trie):
                raise ValueError(f"SpanLogitsProcessor item_count must be in 1..{len(title_trie)} (the catalogue "
                                 f"size), got {item_count}")
            if eos_token_id is None or separator_id is None:
                raise ValueError("SpanLogitsProcessor list mode (item_count) needs eos_token_id and separator_id")
        self.title_trie, self.prompt_length, self.eos_token_id = title_trie, prompt_length, eos_token_id
        self.item_count, self.separator_id = item_count, separator_id
        items = len(title_trie.item_nodes)
        self.excluded = None if excluded is None else [sorted({int(i) for i in row if 0 < int(i) < items})
                                                       for row in excluded]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Returns a new FloatTensor [R, V]: ``scores`` where allowed, -inf elsewhere (see the class docstring).

        Raises:
            ValueError: ``input_ids`` is shorter than ``prompt_length``, or an open span has no
                allowed continuation (every item under its prefix has been named already).
        """
        if input_ids.shape[1] < self.prompt_length:
            raise ValueError(f"SpanLogitsProcessor got input_ids of length {input_ids.shape[1]}, shorter than "
                             f"prompt_length {self.prompt_length}; left-pad prompts to prompt_length")
        tt = self.title_trie
        states = span_states(input_ids[:, self.prompt_length:], tt, self.eos_token_id)
        excluded = [[] for _ in states]  # per row: items no span may name, besides those the answer named
        if self.excluded:
            if len(states) % len(self.excluded):
                raise ValueError(f"SpanLogitsProcessor got {len(states)} rows for {len(self.excluded)} prompts' "
                                 "excluded items; give one list per prompt")
            group = len(states) // len(self.excluded)
            excluded = [self.excluded[r // group] for r in range(len(states))]
        vocab = scores.shape[-1]
        allowed = torch.ones(scores.shape, dtype=torch.bool, device=scores.device)
        in_span = [r for r, (done, span, _, _) in enumerate(states) if not done and span is not None]
        if in_span:
            allowed[in_span] = self._span_mask(in_span, [(states[r][1], states[r][2] + excluded[r]) for r in in_span],
                                               vocab)
        for r, (done, span, items, last) in enumerate(states):
            if done or span is not None:
                continue
            if self.item_count is not None:
                forced = (self.eos_token_id if len(items) >= self.item_count
                          else self.separator_id if last == tt.eoi_id else tt.soi_id)
                allowed[r] = False
                allowed[r, forced] = True
            elif len(set(items + excluded[r])) >= len(tt):
                allowed[r, tt.soi_id] = False
        return scores.masked_fill(~allowed, float("-inf"))

    def _span_mask(self, rows: list[int], spans_used, vocab: int) -> torch.Tensor:
        """BoolTensor [len(rows), V]: the trie children of each open span minus used-up items
        (``spans_used``: per row, its open span's tokens and the items it may no longer name)."""
        tt, trie = self.title_trie, self.title_trie.trie
        device = trie.device
        spans = [span for span, _ in spans_used]
        width = max(map(len, spans), default=0)
        padded = torch.zeros(len(rows), width, dtype=torch.long)
        lengths = torch.tensor([len(s) for s in spans])
        for i, s in enumerate(spans):
            padded[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        padded, lengths = padded.to(device), lengths.to(device)
        nodes = torch.zeros(len(rows), dtype=torch.long, device=device)
        for t in range(width):
            nodes = torch.where(t < lengths, trie.next_nodes(nodes, padded[:, t]), nodes)
        allowed = trie.allowed_mask(nodes, vocab)
        # Named items: count them on every node of their path, row by row.
        used = torch.zeros(len(rows), trie.num_nodes, dtype=torch.long, device=device)
        owners = [(i, item) for i, (_, used_items) in enumerate(spans_used) for item in set(used_items)]
        if owners:
            who = torch.tensor([i for i, _ in owners], device=device)
            paths = tt.item_nodes[torch.tensor([item for _, item in owners], device=device)]  # [U, C]
            keep = paths >= 0
            used.index_put_((who[:, None].expand_as(paths)[keep], paths[keep]),
                            torch.ones(int(keep.sum()), dtype=torch.long, device=device), accumulate=True)
            pair_rows, pair_tokens = allowed.nonzero(as_tuple=True)
            children = trie.next_nodes(nodes[pair_rows], pair_tokens)
            exhausted = used[pair_rows, children] >= tt.subtree_items[children]
            allowed[pair_rows[exhausted], pair_tokens[exhausted]] = False
        empty = ~allowed.any(dim=1)
        if empty.any():
            i = int(empty.nonzero()[0])
            reason = ("left the trie" if nodes[i] < 0
                      else "has every continuation named already in this answer or excluded")
            raise ValueError(f"SpanLogitsProcessor: row {rows[i]}'s open item span {spans[i]} {reason}, so no token "
                             "is allowed; check prompt_length and that the answer asks for fewer items than the "
                             "catalogue holds")
        return allowed
