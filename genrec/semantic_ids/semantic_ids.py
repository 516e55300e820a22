"""The item <-> code-tuple map that generative recommenders train on, and its file.

``semantic_ids.json`` (written by ``genrec/trainers/rqvae_trainer.py``)::

    {"items": {"<raw item id>": [c0, c1, ...], ...},
     "levels": C, "codebook_sizes": [V0, V1, ...],
     "dataset": "ml-100k", "fingerprint": "<Interactions.fingerprint()>"}

Keys of ``items`` are the dataset's raw item ids, so the file stays meaningful outside genrec.
:meth:`SemanticIDs.read` needs no dataset and checks the file itself (structure, codes within their
codebook, tuples unique); :meth:`SemanticIDs.aligned` (or :meth:`SemanticIDs.load`, both at once)
refuses a file made for other data (its fingerprint must equal the fingerprint of the interactions
it is used with) and orders the rows by that data's item indices. :meth:`SemanticIDs.trie` is the
decoding trie every generative model walks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from genrec.decoding import PrefixTrie
from genrec.io import atomic_write_text

if TYPE_CHECKING:
    from genrec.data import Interactions

__all__ = ["SemanticIDs", "SemanticIDsError", "ablation_ids", "level_token_starts"]


def level_token_starts(codebook_sizes: list[int], offset: int = 0) -> np.ndarray:
    """[C+1] token-id boundaries of the levels: level c's tokens are ``starts[c] .. starts[c+1] - 1``,
    one per code, the first at ``offset`` (the layout of :meth:`SemanticIDs.token_ids`)."""
    return offset + np.concatenate([[0], np.cumsum(codebook_sizes)]).astype(np.int64)


REBUILD = "rebuild it with genrec/trainers/rqvae_trainer.py for this dataset"


class SemanticIDsError(ValueError):
    """A semantic-ID file that cannot be used; the message names the file and the fix."""


@dataclass(frozen=True, eq=False)
class SemanticIDs:
    """Code tuples aligned with item indices, and the raw ids of those items.

    Attributes:
        codes: [N+1, C] int64; row i holds item index i's codes, row 0 (padding) is all -1.
        codebook_sizes: V per level.
        dataset: dataset name.
        fingerprint: :meth:`genrec.data.Interactions.fingerprint` of the data the codes were made for.
        item_ids: N+1 raw item ids; entry 0 is the padding entry.
    """

    codes: np.ndarray
    codebook_sizes: list[int]
    dataset: str
    fingerprint: str
    item_ids: list[str]

    def __post_init__(self):
        if len(self.item_ids) != len(self.codes):
            raise SemanticIDsError(f"{len(self.item_ids) - 1} raw item ids for {len(self.codes) - 1} code rows")
        if len(self.codebook_sizes) != self.codes.shape[1]:
            raise SemanticIDsError(f"{len(self.codebook_sizes)} codebook sizes for {self.codes.shape[1]} levels")

    @property
    def num_levels(self) -> int:
        """C, code levels per item."""
        return self.codes.shape[1]

    @property
    def num_items(self) -> int:
        return self.codes.shape[0] - 1

    @property
    def vocab_size(self) -> int:
        """Number of distinct (level, code) tokens: ``sum(codebook_sizes)``."""
        return int(sum(self.codebook_sizes))

    def token_ids(self, offset: int = 0) -> np.ndarray:
        """[N+1, C] one token id per (level, code): ``offset + sum(V_<level) + code``; row 0 stays -1.

        Level-specific tokens (LC-Rec's ``<C{level}_{code}>``, TIGER's per-level embeddings) never
        confuse code 5 of level 0 with code 5 of level 1.
        """
        tokens = self.codes + level_token_starts(self.codebook_sizes, offset)[None, :-1]
        tokens[0] = -1
        return tokens

    def trie(self, offset: int = 0, end_token: int | None = None, vocab_size: int | None = None) -> PrefixTrie:
        """The decoding trie over every item's tokens :meth:`token_ids` ``(offset)``, each followed by
        ``end_token`` when given; a sequence's value is its item index (1..N).

        Args:
            offset: token id of code 0 of level 0.
            end_token: a token that ends every sequence (e.g. an LLM's eos), or ``None``.
            vocab_size: V of the trie's masks (default: one past the largest token).
        """
        tokens = self.token_ids(offset)[1:]
        if end_token is not None:
            tokens = np.hstack([tokens, np.full((len(tokens), 1), end_token, dtype=np.int64)])
        return PrefixTrie(tokens, values=np.arange(1, len(tokens) + 1), vocab_size=vocab_size)

    @classmethod
    def from_codes(cls, codes: np.ndarray, codebook_sizes: list[int], interactions: Interactions) -> SemanticIDs:
        """Wraps codes [N, C] for items 1..N of ``interactions`` (row i-1 = item i)."""
        codes = np.asarray(codes, dtype=np.int64)
        padded = np.vstack([np.full((1, codes.shape[1]), -1, dtype=np.int64), codes])
        ids = cls(padded, [int(v) for v in codebook_sizes], interactions.name, interactions.fingerprint(),
                  list(interactions.item_ids))
        ids.check(f"semantic IDs for {interactions.name}")
        return ids

    def save(self, path: str | Path) -> None:
        """Writes the JSON file atomically."""
        payload = {"items": {self.item_ids[i]: self.codes[i].tolist() for i in range(1, len(self.codes))},
                   "levels": self.num_levels, "codebook_sizes": self.codebook_sizes,
                   "dataset": self.dataset, "fingerprint": self.fingerprint}
        atomic_write_text(path, json.dumps(payload) + "\n")

    @classmethod
    def read(cls, path: str | Path) -> SemanticIDs:
        """Reads a ``semantic_ids.json`` on its own (rows in file order); :class:`SemanticIDsError` says
        what is wrong with it. Use :meth:`aligned` before training on a dataset."""
        path = Path(path)
        if not path.is_file():
            raise SemanticIDsError(f"semantic-ID file not found: {path}; {REBUILD}")
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
            items, sizes, levels = payload["items"], payload["codebook_sizes"], payload["levels"]
            fingerprint = payload["fingerprint"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
            raise SemanticIDsError(f"{path} is not a semantic-ID file ({type(err).__name__}: {err}); {REBUILD}") from None
        if not isinstance(items, dict) or not isinstance(sizes, list) or len(sizes) != levels or not items:
            raise SemanticIDsError(f"{path}: 'items' must map item ids to codes and 'codebook_sizes' have "
                                   f"{levels} entries; {REBUILD}")
        codes = np.full((len(items) + 1, levels), -1, dtype=np.int64)
        for row, (raw, tuple_) in enumerate(items.items(), start=1):
            if not (isinstance(tuple_, list) and len(tuple_) == levels
                    and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in tuple_)):
                raise SemanticIDsError(f"{path}: item {raw!r} has codes {tuple_!r}, expected {levels} non-negative "
                                       f"integers; {REBUILD}")
            codes[row] = tuple_
        ids = cls(codes, [int(v) for v in sizes], str(payload.get("dataset", "")), str(fingerprint),
                  ["[PAD]", *items])
        ids.check(str(path))
        return ids

    def check_for(self, interactions: Interactions, where: str = "semantic IDs") -> None:
        """Raises :class:`SemanticIDsError` unless these IDs were made for ``interactions``."""
        if self.fingerprint != interactions.fingerprint():
            raise SemanticIDsError(
                f"{where} were made for other data (dataset {self.dataset!r}, fingerprint {self.fingerprint}) than "
                f"{interactions.name} (fingerprint {interactions.fingerprint()}): the dataset or its filtering "
                f"differs; {REBUILD}")

    def aligned(self, interactions: Interactions, where: str = "semantic IDs") -> SemanticIDs:
        """These IDs with row i = item index i of ``interactions``, after :meth:`check_for`."""
        self.check_for(interactions, where)
        codes = np.full((interactions.num_items + 1, self.num_levels), -1, dtype=np.int64)
        for row, raw in enumerate(self.item_ids[1:], start=1):
            try:
                codes[interactions.item_index(raw)] = self.codes[row]
            except KeyError:
                raise SemanticIDsError(f"{where}: unknown item id {raw!r} for {interactions.name}; {REBUILD}") from None
        ids = SemanticIDs(codes, self.codebook_sizes, self.dataset, self.fingerprint, list(interactions.item_ids))
        ids.check(where)
        return ids

    @classmethod
    def load(cls, path: str | Path, interactions: Interactions) -> SemanticIDs:
        """:meth:`read` then :meth:`aligned` with ``interactions``."""
        return cls.read(path).aligned(interactions, str(path))

    def check(self, where: str) -> None:
        """Raises :class:`SemanticIDsError` (naming ``where``) for a missing row, an out-of-range code or
        two items sharing a tuple."""
        body = self.codes[1:]
        missing = np.flatnonzero((body < 0).any(axis=1))
        if len(missing):
            raise SemanticIDsError(f"{where}: item index {missing[0] + 1} (and {len(missing) - 1} more) has no codes")
        for level, size in enumerate(self.codebook_sizes):
            if len(body) and body[:, level].max() >= size:
                raise SemanticIDsError(f"{where}: level {level} has a code >= its codebook size {size}")
        if len(np.unique(body, axis=0)) != len(body):
            raise SemanticIDsError(f"{where}: two items share a code tuple; semantic IDs must be unique "
                                   "(resolve collisions when building them)")


def ablation_ids(ids: SemanticIDs, kind: str, seed: int = 0) -> SemanticIDs:
    """Item identifiers for the TIGER paper's ablation, built from the semantic IDs ``ids``.

    Args:
        ids: semantic IDs aligned with item indices.
        kind: ``semantic`` (``ids`` itself); ``random``: the same code tuples dealt to the items in a
            seeded random order, so shape, codebook sizes, code usage and prefix sharing are those
            of ``ids`` and only the link between an item's content and its code is gone;
            ``atomic``: one token per item (level 0 only, codebook size N).
        seed: seed of the ``random`` permutation.
    """
    if kind == "semantic":
        return ids
    if kind == "random":
        order = np.random.default_rng(seed).permutation(ids.num_items)
        codes = ids.codes.copy()
        codes[1:] = ids.codes[1:][order]
        return SemanticIDs(codes, list(ids.codebook_sizes), ids.dataset, ids.fingerprint, list(ids.item_ids))
    if kind == "atomic":
        codes = np.arange(-1, ids.num_items, dtype=np.int64)[:, None]
        return SemanticIDs(codes, [ids.num_items], ids.dataset, ids.fingerprint, list(ids.item_ids))
    raise ValueError(f"unknown item identifiers {kind!r}; use 'semantic', 'random' or 'atomic'")
