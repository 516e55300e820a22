"""Serving a retrieval encoder: item vectors of a catalogue (cached by content) in a faiss index.

:class:`ItemRetriever` answers text queries with item indices. The item vectors are cached as
``<data dir>/cache/retrieval/<key>.npy``, the key hashing the encoder's files (:func:`genrec.assets.model_identity`),
its pooling and passage length, and every item text, so a retrained model or a changed catalogue
never reads a stale cache (written atomically with a checked sidecar, :func:`genrec.io.save_checked_array`).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from genrec import assets
from genrec.data import ItemCatalog
from genrec.io import load_checked_array, save_checked_array
from genrec.retrieval.encoder import RetrievalEncoder
from genrec.retrieval.index import InnerProductIndex

__all__ = ["ItemRetriever", "load_encoder"]


def load_encoder(spec: str) -> RetrievalEncoder:
    """A folder written by the retrieval trainer (``<run>/model``) or any encoder spec (frozen, defaults)."""
    if not spec.startswith(assets.BUNDLED) and not Path(spec).is_dir() and spec.startswith((".", "/", "runs")):
        raise FileNotFoundError(f"no trained retrieval model at {spec}; train one with python "
                                "genrec/trainers/retrieval_trainer.py config/retrieval/ml100k.gin (it writes "
                                "<run dir>/model), or use bundled:all-minilm-l6-v2 frozen")
    if Path(spec).is_dir():
        if not (Path(spec) / "config.json").is_file():
            raise FileNotFoundError(f"{spec} holds no encoder (no config.json); train one with python "
                                    "genrec/trainers/retrieval_trainer.py config/retrieval/ml100k.gin and pass "
                                    "<run dir>/model, or pass bundled:all-minilm-l6-v2")
        return RetrievalEncoder.from_pretrained(spec)
    return RetrievalEncoder(model=spec)


class ItemRetriever:
    """Text -> items of one catalogue.

    Args:
        encoder: the text encoder.
        catalog: the items (their text is ``catalog.text(i)``).
        index_kind: ``flat``, ``ivf`` or ``hnsw`` (:class:`InnerProductIndex`).
        cache: read and write the item-vector cache.
    """

    def __init__(self, encoder: RetrievalEncoder, catalog: ItemCatalog, index_kind: str = "flat", cache: bool = True):
        self.encoder, self.catalog = encoder, catalog
        self.texts = [catalog.text(i) for i in range(1, catalog.num_items + 1)]
        self.item_vectors = self._item_vectors(cache)
        self.index = InnerProductIndex(self.item_vectors, kind=index_kind)

    def _item_vectors(self, cache: bool) -> np.ndarray:
        digest = hashlib.sha256(json.dumps({
            **assets.model_identity(self.encoder.model_spec), "pooling": self.encoder.pooling,
            "passage_max_length": self.encoder.passage_max_length}, sort_keys=True).encode())
        for text in self.texts:
            digest.update(text.encode() + b"\0")
        path = assets.data_dir() / "cache" / "retrieval" / f"{digest.hexdigest()[:24]}.npy"
        if cache and path.is_file():
            vectors, problem = load_checked_array(path)
            if problem is None and len(vectors) == len(self.texts):
                return vectors
            print(f"genrec: ignoring the item-vector cache ({problem or 'wrong row count'}); encoding again",
                  file=sys.stderr)
        vectors = self.encoder.encode(self.texts, query=False)
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)

            def write(tmp):
                with open(tmp, "wb") as handle:
                    np.save(handle, vectors)

            save_checked_array(path, write)
        return vectors

    def query_vectors(self, texts: Sequence[str]) -> np.ndarray:
        return self.encoder.encode(list(texts), query=True)

    def search(self, texts: Sequence[str], k: int = 10,
               exclude: Sequence[Sequence[int]] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k item indices [B, k] (1..N) and scores for each text (``exclude``: items left out per text)."""
        excluded = None if exclude is None else [np.asarray(e, dtype=np.int64) for e in exclude]
        return self.index.search(self.query_vectors(texts), k, exclude=excluded)

    def similarity(self, text: str, items: Sequence[int]) -> np.ndarray:
        """Cosine similarity [len(items)] of ``text`` to each item (1..N) of ``items``."""
        query = self.query_vectors([text])[0]
        return self.item_vectors[np.asarray(items, dtype=np.int64) - 1] @ query
