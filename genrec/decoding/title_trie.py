"""Item spans in text: ``<SOI>``/``<EOI>`` tokens and a token-level trie over the catalogue's titles.

RecLM-cgen (Liao et al., arXiv 2505.03336, RecAI) lets a chat LLM write free text in which every
recommended item sits between two added special tokens, ``<SOI>`` (start of item) and ``<EOI>``
(end of item). Inside a span the model may only spell a catalogue title, so an out-of-catalogue
item cannot be generated. This module holds the vocabulary side:

* :func:`add_span_tokens` adds ``<SOI>``/``<EOI>`` as special tokens and initialises their input
  (and untied output) rows to the mean embedding of the phrases "start of an item" / "end of an
  item", as RecLM-cgen does.
* :func:`catalogue_titles` gives every item one title string: ``"Title (year)"``, round-tripped
  through the tokenizer (encode, then decode) so that the trie's tokens are exactly what the model
  generates and decodes to, with duplicate titles made distinct by a ``" (n)"`` suffix (the second
  ``"Title (1997)"`` becomes ``"Title (1997) (2)"``), as RecLM-cgen's data code does.
* :class:`TitleTrie` is a :class:`~genrec.decoding.trie.PrefixTrie` over ``title tokens + <EOI>``
  (the end token makes no title a proper prefix of another's sequence), valued by item index, plus
  what the span processor needs to stop repeats: each item's node path and the number of items
  under each node. It also parses generated token ids back into spans and items.

A title is tokenised on its own (``add_special_tokens=False``). Special tokens split the text
before the BPE runs, so ``"...<SOI>Heat (1995)<EOI>"`` tokenises the title exactly as the title
alone; training text must therefore write spans with no space after ``<SOI>``.

Shapes: N items, C longest title sequence (tokens + ``<EOI>``), M trie nodes, V vocabulary.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch

from genrec.decoding.trie import PrefixTrie

__all__ = ["EOI", "SOI", "TitleTrie", "add_span_tokens", "catalogue_titles", "span_token_ids"]

SOI = "<SOI>"
"""Opens an item span."""
EOI = "<EOI>"
"""Closes an item span."""
_INIT_PHRASES = {SOI: "start of an item", EOI: "end of an item"}


def span_token_ids(tokenizer) -> tuple[int, int]:
    """``(soi_id, eoi_id)`` of a tokenizer that has the span tokens; ValueError naming the fix otherwise."""
    vocab = tokenizer.get_vocab()
    if SOI not in vocab or EOI not in vocab:
        raise ValueError(f"the tokenizer has no {SOI}/{EOI} tokens; add them with add_span_tokens(tokenizer, llm)")
    return vocab[SOI], vocab[EOI]


@torch.no_grad()
def add_span_tokens(tokenizer, llm, init: str = "mean") -> tuple[int, int]:
    """Adds ``<SOI>``/``<EOI>`` as special tokens (once) and resizes the LLM's embeddings.

    Args:
        tokenizer: a Hugging Face tokenizer (changed in place).
        llm: its causal LM (resized in place); ``None`` to change the tokenizer only.
        init: ``mean`` (each new row = mean input embedding of its phrase's tokens) or ``default``.

    Returns:
        ``(soi_id, eoi_id)``. A tokenizer that already has both tokens is left as it is.
    """
    if init not in ("mean", "default"):
        raise ValueError(f"unknown span token init {init!r}; use 'mean' or 'default'")
    vocab = tokenizer.get_vocab()
    if SOI in vocab and EOI in vocab:
        return span_token_ids(tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": [SOI, EOI]})
    soi, eoi = span_token_ids(tokenizer)
    if llm is None:
        return soi, eoi
    llm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    if init == "mean":
        embeddings = llm.get_input_embeddings().weight
        output = llm.get_output_embeddings()
        untied = output is not None and output.weight.data_ptr() != embeddings.data_ptr()
        for token, row in ((SOI, soi), (EOI, eoi)):
            pieces = tokenizer(_INIT_PHRASES[token], add_special_tokens=False)["input_ids"]
            embeddings[row] = embeddings[torch.tensor(pieces)].float().mean(0).to(embeddings.dtype)
            if untied:
                output.weight[row] = output.weight[torch.tensor(pieces)].float().mean(0).to(output.weight.dtype)
    return soi, eoi


def _round_trip(tokenizer, texts: Sequence[str]) -> list[str]:
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [tokenizer.decode(row, skip_special_tokens=False).strip() for row in ids]


def catalogue_titles(raw_titles: Sequence[str], tokenizer) -> list[str]:
    """One distinct, tokenizer-stable title per item.

    Args:
        raw_titles: per item index, its title (index 0, the padding entry, is ignored), e.g.
            :func:`genrec.llm.tasks.item_title` of each item.
        tokenizer: the model's tokenizer.

    Returns:
        Titles per item index (``""`` at 0): round-tripped through the tokenizer, the later of two
        equal titles suffixed ``" (2)"``, ``" (3)"``, ... (in item order), each decoding to itself.

    Raises:
        ValueError: a title is empty after the round trip or contains a span token.
    """
    titles = _round_trip(tokenizer, [str(t).strip() for t in raw_titles[1:]])
    for item, title in enumerate(titles, start=1):
        if not title or SOI in title or EOI in title:
            raise ValueError(f"item {item} has title {raw_titles[item]!r}, which is empty or holds {SOI}/{EOI}; "
                             "give every item a plain, non-empty title")
    taken = set(titles)
    seen: Counter = Counter()
    for i, title in enumerate(titles):
        seen[title] += 1
        if seen[title] > 1:
            n = seen[title]
            while f"{title} ({n})" in taken:
                n += 1
            new = _round_trip(tokenizer, [f"{title} ({n})"])[0]
            taken.add(new)
            titles[i] = new
    if len(set(titles)) != len(titles):
        raise ValueError("catalogue titles are not distinct after disambiguation; check the tokenizer's round trip")
    return [""] + titles


class TitleTrie:
    """The catalogue's titles as a token trie (each sequence ``title tokens + <EOI>``, value = item index).

    Args:
        titles: per item index, a distinct title (:func:`catalogue_titles`; index 0 unused).
        tokenizer: the model's tokenizer, with the span tokens (:func:`add_span_tokens`).

    Attributes:
        trie: the :class:`PrefixTrie` (vocabulary = ``len(tokenizer)``).
        titles: as given; ``title_to_item`` maps each back to its index.
        soi_id, eoi_id: the span tokens.
        item_nodes: LongTensor [N + 1, C], the nodes on each item's path (-1 padding; row 0 empty).
        subtree_items: LongTensor [M], the number of items whose path passes through each node.
    """

    def __init__(self, titles: Sequence[str], tokenizer):
        self.soi_id, self.eoi_id = span_token_ids(tokenizer)
        self.titles = list(titles)
        self.title_to_item = {title: item for item, title in enumerate(self.titles) if item > 0}
        if len(self.title_to_item) != len(self.titles) - 1:
            raise ValueError("TitleTrie titles must be distinct; build them with catalogue_titles")
        pieces = tokenizer(self.titles[1:], add_special_tokens=False)["input_ids"]
        self.tokens = [[]] + [list(p) for p in pieces]
        self.trie = PrefixTrie([p + [self.eoi_id] for p in pieces], values=np.arange(1, len(self.titles)),
                               vocab_size=len(tokenizer))
        width = self.trie.max_depth
        padded = torch.full((len(self.titles), width), -1, dtype=torch.long)
        for item, p in enumerate(self.tokens[1:], start=1):
            padded[item, : len(p) + 1] = torch.tensor(p + [self.eoi_id])
        nodes = torch.full_like(padded, -1)
        current = torch.zeros(len(padded), dtype=torch.long)
        current[0] = -1
        for d in range(width):
            current = torch.where(padded[:, d] >= 0, self.trie.next_nodes(current, padded[:, d].clamp(min=0)), -1)
            nodes[:, d] = current
        self.item_nodes = nodes
        paths = nodes[nodes >= 0]
        self.subtree_items = torch.bincount(paths, minlength=self.trie.num_nodes)
        self.subtree_items[0] = len(self.titles) - 1

    def __len__(self) -> int:
        """N, the number of items."""
        return len(self.titles) - 1

    def to(self, device) -> TitleTrie:
        """Moves the tensors to ``device`` in place; returns self."""
        self.trie.to(device)
        self.item_nodes, self.subtree_items = self.item_nodes.to(device), self.subtree_items.to(device)
        return self

    def span_text(self, item: int) -> str:
        """``"<SOI>title<EOI>"`` of item index ``item``."""
        return f"{SOI}{self.titles[item]}{EOI}"

    def item_of_tokens(self, tokens: Sequence[int]) -> int:
        """Item index spelled by a span's title tokens (without ``<SOI>``/``<EOI>``), -1 if none."""
        node = torch.zeros(1, dtype=torch.long, device=self.trie.device)
        for token in list(tokens) + [self.eoi_id]:
            node = self.trie.next_nodes(node, torch.tensor([int(token)], device=node.device))
        return int(self.trie.values(node)[0])

    def parse(self, token_ids: Sequence[int], tokenizer, stop_ids: Sequence[int] = ()) -> list[tuple[str, int]]:
        """The spans of generated tokens as ``(title text, item index or -1)``, in order.

        A span opened by ``<SOI>`` ends at ``<EOI>``, at the next ``<SOI>``, or at the end of the
        tokens (an unfinished span still names what it spelled). Parsing stops at a ``stop_ids``
        token (e.g. the eos token). The item is looked up by its tokens first, then by its text.
        """
        spans, current = [], None
        stops = set(int(s) for s in stop_ids)
        for token in (int(t) for t in token_ids):
            if token in stops:
                break
            if token == self.soi_id:
                if current is not None:
                    spans.append(current)
                current = []
            elif token == self.eoi_id:
                if current is not None:
                    spans.append(current)
                current = None
            elif current is not None:
                current.append(token)
        if current is not None:
            spans.append(current)
        out = []
        for tokens in spans:
            text = tokenizer.decode(tokens, skip_special_tokens=False).strip()
            item = self.item_of_tokens(tokens) if tokens else -1
            out.append((text, item if item > 0 else self.title_to_item.get(text, -1)))
        return out
