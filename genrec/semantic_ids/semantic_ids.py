"""The item <-> code-tuple map that generative recommenders train on, and its file.

``semantic_ids.json`` (written by ``genrec/trainers/rqvae_trainer.py``)::

    {"items": {"<raw item id>": [c0, c1, ...], ...},
     "levels": C, "codebook_sizes": [V0, V1, ...],
     "dataset": "ml-100k", "fingerprint": "<Interactions.fingerprint()>"}

Keys of ``items`` are the dataset's raw item ids, so the file stays meaningful outside genrec.
:meth:`SemanticIDs.load` checks everything a downstream trainer relies on (structure, every item
present, codes within their codebook, tuples unique) and refuses a file made for other data: its
fingerprint must equal the fingerprint of the interactions it is used with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from genrec.training.checkpoint import atomic_write_text

if TYPE_CHECKING:
    from genrec.data import Interactions

__all__ = ["SemanticIDs", "SemanticIDsError"]


class SemanticIDsError(ValueError):
    """A semantic-ID file that cannot be used; the message names the file and the fix."""


@dataclass(frozen=True, eq=False)
class SemanticIDs:
    """Code tuples aligned with item indices.

    Attributes:
        codes: [N+1, C] int64; row i holds item index i's codes, row 0 (padding) is all -1.
        codebook_sizes: V per level.
        dataset: dataset name.
        fingerprint: :meth:`genrec.data.Interactions.fingerprint` of the data the codes were made for.
    """

    codes: np.ndarray
    codebook_sizes: list[int]
    dataset: str
    fingerprint: str

    @property
    def levels(self) -> int:
        return self.codes.shape[1]

    @property
    def num_items(self) -> int:
        return self.codes.shape[0] - 1

    def token_ids(self, offset: int = 0) -> np.ndarray:
        """[N+1, C] one token id per (level, code): ``offset + sum(V_<level) + code``; row 0 stays -1.

        Level-specific tokens (LC-Rec's ``<C{level}_{code}>``, TIGER's per-level embeddings) never
        confuse code 5 of level 0 with code 5 of level 1.
        """
        starts = offset + np.concatenate([[0], np.cumsum(self.codebook_sizes)[:-1]])
        tokens = self.codes + starts[None, :]
        tokens[0] = -1
        return tokens

    @classmethod
    def from_codes(cls, codes: np.ndarray, codebook_sizes: list[int], interactions: Interactions) -> SemanticIDs:
        """Wraps codes [N, C] for items 1..N of ``interactions`` (row i-1 = item i)."""
        codes = np.asarray(codes, dtype=np.int64)
        padded = np.vstack([np.full((1, codes.shape[1]), -1, dtype=np.int64), codes])
        ids = cls(padded, [int(v) for v in codebook_sizes], interactions.name, interactions.fingerprint())
        ids._check(f"semantic IDs for {interactions.name}")
        return ids

    def save(self, path: str | Path, item_ids: list[str]) -> None:
        """Writes the JSON file atomically; ``item_ids`` are the raw ids (``Interactions.item_ids``)."""
        if len(item_ids) != len(self.codes):
            raise ValueError(f"{len(item_ids) - 1} raw item ids for {self.num_items} items")
        payload = {"items": {item_ids[i]: self.codes[i].tolist() for i in range(1, len(self.codes))},
                   "levels": self.levels, "codebook_sizes": self.codebook_sizes,
                   "dataset": self.dataset, "fingerprint": self.fingerprint}
        atomic_write_text(path, json.dumps(payload) + "\n")

    @classmethod
    def load(cls, path: str | Path, interactions: Interactions) -> SemanticIDs:
        """Reads a ``semantic_ids.json`` for ``interactions``; :class:`SemanticIDsError` says what is wrong."""
        path = Path(path)
        fix = "rebuild it with genrec/trainers/rqvae_trainer.py for this dataset"
        if not path.is_file():
            raise SemanticIDsError(f"semantic-ID file not found: {path}; {fix}")
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
            items, sizes, levels = payload["items"], payload["codebook_sizes"], payload["levels"]
            fingerprint = payload["fingerprint"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
            raise SemanticIDsError(f"{path} is not a semantic-ID file ({type(err).__name__}: {err}); {fix}") from None
        if fingerprint != interactions.fingerprint():
            raise SemanticIDsError(
                f"{path} was made for other data (dataset {payload.get('dataset')!r}, fingerprint {fingerprint}) than "
                f"{interactions.name} (fingerprint {interactions.fingerprint()}): the dataset or its filtering "
                f"differs; {fix}")
        if not isinstance(items, dict) or len(sizes) != levels:
            raise SemanticIDsError(f"{path}: 'items' must map item ids to codes and 'codebook_sizes' have "
                                   f"{levels} entries; {fix}")
        codes = np.full((interactions.num_items + 1, levels), -1, dtype=np.int64)
        for raw, tuple_ in items.items():
            if not (isinstance(tuple_, list) and len(tuple_) == levels
                    and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in tuple_)):
                raise SemanticIDsError(f"{path}: item {raw!r} has codes {tuple_!r}, expected {levels} non-negative "
                                       f"integers; {fix}")
            try:
                codes[interactions.item_index(raw)] = tuple_
            except KeyError:
                raise SemanticIDsError(f"{path}: unknown item id {raw!r} for {interactions.name}; {fix}") from None
        ids = cls(codes, [int(v) for v in sizes], str(payload.get("dataset", "")), fingerprint)
        ids._check(str(path))
        return ids

    def _check(self, where: str) -> None:
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
