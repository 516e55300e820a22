"""A prefix trie over token-id sequences, built with numpy and queried with tensor lookups.

Generative recommenders decode an item as a short sequence of tokens (semantic-ID codes in TIGER,
Rajput et al., NeurIPS 2023, arXiv 2305.05065; item-title tokens in LLM recommenders) and must only
produce sequences that name a real item. As in GENRE (De Cao et al., ICLR 2021, arXiv 2010.00904),
the valid sequences are stored in a prefix trie and each decoding step keeps only the tokens that
extend the current prefix inside the trie.

Build (no Python loop over sequences):
  1. Pad the N sequences with -1 to [N, C] and sort the rows lexicographically (``np.lexsort``);
     a shorter sequence sorts before its extensions because -1 is smaller than every token.
  2. A row opens a new node at depth d when it differs from the previous sorted row in any of its
     first d + 1 tokens: the element-wise "differs" flags are OR-accumulated along the depth axis.
  3. Nodes are numbered breadth-first (root 0, then every depth-1 node, then depth 2, ...) by a
     cumulative sum of the new-node flags per depth; a row's node at depth d is the last node
     opened at that depth by it or an earlier row. Within a depth, nodes are ordered by their
     prefix, i.e. by (parent, token).

Storage (torch int64 tensors, memory proportional to the M nodes, never a dense [M, V] table):
  * ``child_ptr`` [M + 1]: CSR offsets; the children of node n are edges
    ``child_ptr[n] : child_ptr[n + 1]``.
  * ``child_token`` [E], ``child_node`` [E]: token and target node of each edge (E = M - 1).
  * ``edge_key`` [E] = ``parent * vocab_size + token``: sorted by construction (parents are
    numbered breadth-first and edges are emitted in (parent, token) order), so following an edge
    for a whole batch is one ``torch.searchsorted``.
  * ``node_value`` [M]: the value of the sequence that ends at a node, -1 for inner nodes;
    ``node_depth`` [M].

Queries work on a batch of nodes at once: :meth:`PrefixTrie.next_nodes` follows one edge per row,
:meth:`PrefixTrie.walk` follows a [B, T] batch of prefixes, :meth:`PrefixTrie.allowed_mask` turns
the children of B nodes into a [B, V] boolean mask with one ``repeat_interleave`` and one scatter.
Node -1 means "not in the trie" and propagates through every query.

Shapes: B rows (beams), T prefix length, C longest sequence, V vocabulary, M nodes, E edges.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

__all__ = ["PrefixTrie"]


def _pad_sequences(
    sequences: np.ndarray | torch.Tensor | Sequence[Sequence[int]],
) -> tuple[np.ndarray, np.ndarray]:
    """Rows [N, C] padded on the right with -1, and the lengths [N] of the sequences."""
    if isinstance(sequences, torch.Tensor):
        sequences = sequences.cpu().numpy()
    if isinstance(sequences, np.ndarray):
        if sequences.ndim != 2:
            raise ValueError(f"PrefixTrie sequences array must have shape [N, C], got {sequences.shape}")
        return sequences.astype(np.int64), np.full(len(sequences), sequences.shape[1], dtype=np.int64)
    rows = [np.asarray(s, dtype=np.int64).reshape(-1) for s in sequences]
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    padded = np.full((len(rows), lengths.max(initial=0)), -1, dtype=np.int64)
    if rows:
        padded[np.arange(padded.shape[1]) < lengths[:, None]] = np.concatenate(rows)
    return padded, lengths


def _check_sequences(padded: np.ndarray, lengths: np.ndarray) -> None:
    """Raises ValueError for no sequences, an empty sequence or a negative token."""
    if len(padded) == 0:
        raise ValueError("PrefixTrie needs at least one sequence, got none")
    empty = np.flatnonzero(lengths == 0)
    if len(empty):
        raise ValueError(f"PrefixTrie sequence {empty[0]} is empty; every sequence needs at least one token")
    negative = np.argwhere((padded < 0) & (np.arange(padded.shape[1]) < lengths[:, None]))
    if len(negative):
        row, pos = negative[0]
        raise ValueError(f"PrefixTrie sequence {row} has token {padded[row, pos]} at position {pos}; "
                         "token ids must be >= 0")


def _check_adjacent_rows(rows: np.ndarray, order: np.ndarray, differs: np.ndarray) -> None:
    """Raises ValueError if two sorted neighbours are equal or one is a proper prefix of the next.

    After a lexicographic sort a sequence is directly followed by its duplicates and, if it is a
    proper prefix of any sequence, by one of its extensions, so checking neighbours suffices.

    Args:
        rows: int [N, C], the -1-padded sequences in sorted order.
        order: int [N], original index of each sorted row.
        differs: bool [N - 1, C], ``rows[1:] != rows[:-1]``.
    """
    duplicate = np.flatnonzero(~differs.any(axis=1))
    if len(duplicate):
        r = duplicate[0] + 1
        raise ValueError(f"PrefixTrie sequences {order[r - 1]} and {order[r]} are the same sequence "
                         f"{_tokens(rows[r])}; give each item a distinct sequence (e.g. resolve collisions "
                         "with an extra level)")
    first_difference = differs.argmax(axis=1)
    prefix = np.flatnonzero(rows[:-1][np.arange(len(differs)), first_difference] == -1)
    if len(prefix):
        r = prefix[0] + 1
        raise ValueError(f"PrefixTrie sequence {order[r - 1]} {_tokens(rows[r - 1])} is a proper prefix of "
                         f"sequence {order[r]} {_tokens(rows[r])}; append an end-of-sequence token to every "
                         "sequence so that none is a prefix of another")


def _tokens(row: np.ndarray) -> list[int]:
    """The tokens of a -1-padded row, as a list."""
    return row[row >= 0].tolist()


class PrefixTrie:
    """Prefix trie mapping complete token sequences to values, queried for batches of nodes.

    Args:
        sequences: int array or tensor [N, C] of fixed-length sequences, or a list of N int
            sequences of any lengths >= 1. Token ids must be >= 0; no sequence may repeat or be a
            proper prefix of another.
        values: int [N], the value of each complete sequence (e.g. its item id); default
            ``arange(N)``. Values must be >= 0 (-1 means "no value").
        vocab_size: V, greater than every token; default ``max token + 1``.

    Raises:
        ValueError: for no sequences, an empty sequence, a negative token, a duplicate sequence, a
            sequence that is a proper prefix of another, ``values`` of the wrong length or with a
            negative entry, or a ``vocab_size`` that does not exceed every token.
    """

    _TENSORS = ("child_ptr", "child_token", "child_node", "edge_key", "node_value", "node_depth")

    def __init__(
        self,
        sequences: np.ndarray | torch.Tensor | Sequence[Sequence[int]],
        values: np.ndarray | torch.Tensor | Sequence[int] | None = None,
        vocab_size: int | None = None,
    ):
        padded, lengths = _pad_sequences(sequences)
        _check_sequences(padded, lengths)
        num_sequences, max_depth = padded.shape
        values = np.arange(num_sequences) if values is None else np.asarray(values, dtype=np.int64).reshape(-1)
        if len(values) != num_sequences:
            raise ValueError(f"PrefixTrie got {num_sequences} sequences but {len(values)} values; "
                             "pass one value per sequence")
        if (values < 0).any():
            raise ValueError(f"PrefixTrie values must be >= 0 (-1 means 'no value'), got {values.min()}")
        max_token = int(padded.max())
        vocab_size = max_token + 1 if vocab_size is None else int(vocab_size)
        if vocab_size <= max_token:
            raise ValueError(f"PrefixTrie vocab_size {vocab_size} must exceed every token "
                             f"(max token {max_token})")

        order = np.lexsort(padded.T[::-1])  # primary key: column 0
        rows = padded[order]
        differs = rows[1:] != rows[:-1]  # [N - 1, C]
        _check_adjacent_rows(rows, order, differs)
        opens = np.logical_or.accumulate(np.vstack([np.ones((1, max_depth), bool), differs]), axis=1)
        opens &= rows >= 0  # [N, C]: row opens a new node at depth d + 1

        per_depth = opens.sum(axis=0)
        first_id = 1 + np.concatenate([[0], np.cumsum(per_depth)[:-1]])
        node_of = np.where(rows >= 0, first_id + np.cumsum(opens, axis=0) - 1, -1)  # [N, C]
        parent_of = np.hstack([np.zeros((num_sequences, 1), np.int64), node_of[:, :-1]])
        num_nodes = 1 + int(per_depth.sum())

        # Edges in depth-major, then sorted-row order, which is the order of their child ids.
        depth, row = np.nonzero(opens.T)
        edge_parent, edge_token, edge_child = parent_of[row, depth], rows[row, depth], node_of[row, depth]
        edge_key = edge_parent * vocab_size + edge_token
        assert (np.diff(edge_key) > 0).all(), "edge keys must be strictly increasing by construction"

        node_value = np.full(num_nodes, -1, dtype=np.int64)
        node_value[node_of[np.arange(num_sequences), lengths[order] - 1]] = values[order]
        node_depth = np.zeros(num_nodes, dtype=np.int64)
        node_depth[edge_child] = depth + 1
        children_per_node = np.bincount(edge_parent, minlength=num_nodes)

        self.vocab_size = vocab_size
        self.max_depth = max_depth
        self._num_sequences = num_sequences
        self.child_ptr = torch.from_numpy(np.concatenate([[0], np.cumsum(children_per_node)]))
        self.child_token = torch.from_numpy(edge_token)
        self.child_node = torch.from_numpy(edge_child)
        self.edge_key = torch.from_numpy(edge_key)
        self.node_value = torch.from_numpy(node_value)
        self.node_depth = torch.from_numpy(node_depth)

    @property
    def num_nodes(self) -> int:
        """M, the number of nodes including the root."""
        return len(self.node_value)

    @property
    def device(self) -> torch.device:
        """Device of the trie's tensors."""
        return self.edge_key.device

    @property
    def nbytes(self) -> int:
        """Memory held by the trie's tensors, in bytes."""
        return sum(getattr(self, name).nbytes for name in self._TENSORS)

    def __len__(self) -> int:
        """N, the number of complete sequences."""
        return self._num_sequences

    def __repr__(self) -> str:
        return (f"PrefixTrie(sequences={len(self)}, nodes={self.num_nodes}, max_depth={self.max_depth}, "
                f"vocab_size={self.vocab_size}, device={self.device})")

    def to(self, device: torch.device | str) -> PrefixTrie:
        """Moves the trie's tensors to ``device`` in place and returns the trie (like ``nn.Module.to``)."""
        for name in self._TENSORS:
            setattr(self, name, getattr(self, name).to(device))
        return self

    def next_nodes(self, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Follows one edge per row.

        Args:
            nodes: LongTensor [B], current nodes (-1 = outside the trie).
            tokens: LongTensor [B], token to follow from each node.

        Returns:
            LongTensor [B], the child reached by each token, or -1 where the node has no such child
            (or is -1, or the token is outside 0..vocab_size-1).
        """
        keys = nodes * self.vocab_size + tokens
        pos = torch.searchsorted(self.edge_key, keys).clamp_(max=len(self.edge_key) - 1)
        found = (self.edge_key[pos] == keys) & (nodes >= 0) & (tokens >= 0) & (tokens < self.vocab_size)
        return torch.where(found, self.child_node[pos], -1)

    def walk(self, prefixes: torch.Tensor) -> torch.Tensor:
        """Node reached from the root by each prefix.

        Args:
            prefixes: LongTensor [B, T], T >= 0.

        Returns:
            LongTensor [B], the node at the end of each prefix, or -1 if the prefix leaves the trie.
        """
        nodes = torch.zeros(prefixes.shape[0], dtype=torch.long, device=prefixes.device)
        for t in range(prefixes.shape[1]):
            nodes = self.next_nodes(nodes, prefixes[:, t])
        return nodes

    def allowed_mask(self, nodes: torch.Tensor, vocab_size: int | None = None) -> torch.Tensor:
        """Which tokens extend each node inside the trie.

        Args:
            nodes: LongTensor [B] (-1 = outside the trie).
            vocab_size: V, width of the mask, >= the trie's ``vocab_size`` (e.g. an LLM's
                vocabulary); default the trie's ``vocab_size``.

        Returns:
            BoolTensor [B, V], True at the tokens of each node's children. Rows of -1 nodes and of
            leaves are all False; the caller decides what that means.
        """
        vocab_size = self.vocab_size if vocab_size is None else vocab_size
        if vocab_size < self.vocab_size:
            raise ValueError(f"allowed_mask vocab_size {vocab_size} is smaller than the trie's vocab_size "
                             f"{self.vocab_size}; pass the full width of the scores")
        inside = nodes >= 0
        safe = torch.where(inside, nodes, 0)
        first = self.child_ptr[safe]
        counts = torch.where(inside, self.child_ptr[safe + 1] - first, 0)
        rows = torch.repeat_interleave(torch.arange(len(nodes), device=nodes.device), counts)
        # Edge index of each (row, child) pair: the row's first edge plus the pair's rank in its row.
        rank = torch.arange(len(rows), device=nodes.device) - torch.repeat_interleave(counts.cumsum(0) - counts,
                                                                                       counts)
        edges = first[rows] + rank
        mask = torch.zeros(len(nodes), vocab_size, dtype=torch.bool, device=nodes.device)
        mask[rows, self.child_token[edges]] = True
        return mask

    def is_leaf(self, nodes: torch.Tensor) -> torch.Tensor:
        """BoolTensor [B]: True where a node (not -1) has no children, i.e. ends a complete sequence."""
        safe = nodes.clamp(min=0)
        return (nodes >= 0) & (self.child_ptr[safe + 1] == self.child_ptr[safe])

    def values(self, nodes: torch.Tensor) -> torch.Tensor:
        """LongTensor [B]: the value of the sequence ending at each node, -1 for inner and -1 nodes."""
        return torch.where(nodes >= 0, self.node_value[nodes.clamp(min=0)], -1)

    def prefix_allowed_tokens_fn(self, prompt_length: int,
                                 eos_token_id: int) -> Callable[[int, torch.Tensor], list[int]]:
        """The per-row callable of HF ``generate(prefix_allowed_tokens_fn=...)``, for reference.

        HF calls it once per beam and step from a Python loop; :class:`TrieLogitsProcessor` does
        the same work for all beams at once. This path walks the trie in plain Python over the
        CSR arrays, independently of :meth:`next_nodes`, and serves as the slow baseline.

        Args:
            prompt_length: columns of ``input_ids`` before the generated tokens (prompts must be
                left-padded to this length).
            eos_token_id: the only token allowed once a complete sequence has been generated.

        Returns:
            ``fn(batch_id, input_ids_1d) -> list[int]``: the children tokens of the node reached by
            ``input_ids_1d[prompt_length:]``, ``[eos_token_id]`` at a leaf, ``[]`` if the generated
            tokens left the trie (HF then raises).
        """
        child_ptr, child_token = self.child_ptr.tolist(), self.child_token.tolist()
        child_node = self.child_node.tolist()

        def fn(batch_id: int, input_ids: torch.Tensor) -> list[int]:
            node = 0
            for token in input_ids[prompt_length:].tolist():
                children = child_token[child_ptr[node]:child_ptr[node + 1]]
                if token not in children:
                    return []
                node = child_node[child_ptr[node] + children.index(token)]
            children = child_token[child_ptr[node]:child_ptr[node + 1]]
            return children if children else [eos_token_id]

        return fn
