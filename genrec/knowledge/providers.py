"""Knowledge providers: facts about a user's candidates, as sentences for an LLM re-ranking prompt.

DOKE (RecAI's Knowledge Plugin, arXiv 2311.10779) does not fine-tune the LLM; it writes domain
knowledge that the LLM lacks into the prompt. Each provider here turns ``(history, candidates)`` into
a few short sentences, from one source of knowledge:

* :class:`CooccurrenceKnowledge`: item co-occurrence in the training interactions, normalised as in
  DOKE, ``co(i, j) / sqrt(count_i * count_j)`` (co = users who interacted with both); per candidate,
  the history items it co-occurs with most;
* :class:`EmbeddingNeighbours`: cosine neighbours in an item-vector space (by default the item-text
  embeddings that semantic IDs are built from, :func:`genrec.semantic_ids.embed.embed_texts`); per
  candidate, its most similar history items;
* :class:`RecommenderKnowledge`: a trained genrec recommender's order of the candidates (SASRec or
  any :class:`~genrec.models.base.Recommender` with ``score``);
* :class:`AttributeKnowledge`: item attributes (year, genres) of each candidate and the user's
  attribute profile (most frequent genres in the history).

Every provider has ``name`` and ``facts(history, candidates) -> list[str]``; items are genrec
indices 1..N, ``history`` time-ordered, and sentences name items as :func:`item_name` writes them.
The prompt template (:mod:`genrec.knowledge.prompt`) composes the providers' sentences.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import gin
import numpy as np
import torch
from scipy import sparse

from genrec.data import ItemCatalog

__all__ = ["AttributeKnowledge", "CooccurrenceKnowledge", "EmbeddingNeighbours", "KnowledgeProvider",
           "RecommenderKnowledge", "item_name"]


def item_name(catalog: ItemCatalog, item: int) -> str:
    """``"Title (Year)"`` of item index ``item`` (the title alone without a year, the raw id without a title)."""
    title = catalog.fields.get("title", [""] * len(catalog.item_ids))[item]
    year = catalog.fields.get("year", [""] * len(catalog.item_ids))[item]
    if not title:
        return catalog.item_ids[item]
    return f"{title} ({year})" if year else title


class KnowledgeProvider:
    """One source of knowledge; subclasses set ``name`` and implement :meth:`facts`."""

    name = "knowledge"

    def __init__(self, catalog: ItemCatalog):
        self.catalog = catalog

    def facts(self, history: np.ndarray, candidates: Sequence[int]) -> list[str]:
        """Sentences about ``candidates`` (item indices) for a user with time-ordered ``history``."""
        raise NotImplementedError

    def _names(self, items) -> str:
        return ", ".join(item_name(self.catalog, int(i)) for i in items)


def _related_history(similarity: np.ndarray, history: np.ndarray, candidates: Sequence[int], top_k: int,
                     max_facts: int | None) -> list[tuple[int, np.ndarray]]:
    """``(candidate, its top_k history items with similarity > 0)`` for the ``max_facts`` candidates whose
    best similarity is highest (strongest first), from ``similarity`` [C, |history|]."""
    out = []
    for c, row in zip(candidates, similarity):
        order = np.argsort(-row, kind="stable")[:top_k]
        found = history[order[row[order] > 0]]
        if len(found):
            out.append((float(row[order[0]]), int(c), found))
    out.sort(key=lambda t: -t[0])
    return [(c, found) for _, c, found in out[:max_facts]]


@gin.configurable(denylist=["sequences", "num_items", "catalog"])
class CooccurrenceKnowledge(KnowledgeProvider):
    """Co-occurrence of items in the same user's training interactions (DOKE's normalisation).

    Args:
        sequences: per user, the training item indices (test interactions must not be in them).
        num_items: N.
        catalog: the item catalogue (names in sentences).
        top_k: history items named per candidate.
        recent: only the last ``recent`` history items are compared (``None``: all).
        max_facts: sentences kept, for the candidates with the strongest co-occurrence (``None``: all).
    """

    name = "cooccurrence"

    def __init__(self, sequences: Sequence[np.ndarray], num_items: int, catalog: ItemCatalog, top_k: int = 2,
                 recent: int | None = 20, max_facts: int | None = 8):
        super().__init__(catalog)
        if top_k < 1 or (recent is not None and recent < 1):
            raise ValueError(f"CooccurrenceKnowledge.top_k ({top_k}) and recent ({recent}) must be >= 1")
        self.top_k, self.recent, self.max_facts = top_k, recent, max_facts
        rows = np.concatenate([np.full(len(np.unique(s)), u) for u, s in enumerate(sequences)] or [[]])
        cols = np.concatenate([np.unique(s) for s in sequences] or [[]])
        users = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows.astype(np.int64), cols.astype(np.int64))),
                                  shape=(len(sequences), num_items + 1))
        co = (users.T @ users).tocsr()  # [N+1, N+1] users who interacted with both
        self.counts = np.asarray(co.diagonal(), dtype=np.float64)
        co.setdiag(0)
        co.eliminate_zeros()
        self.cooccurrence = co

    def score(self, items: Sequence[int], others: Sequence[int]) -> np.ndarray:
        """Normalised co-occurrence [len(items), len(others)]: ``co(i, j) / sqrt(count_i count_j)`` (0 if unseen)."""
        items, others = np.asarray(items, np.int64), np.asarray(others, np.int64)
        block = self.cooccurrence[items][:, others].toarray()
        norm = np.sqrt(np.outer(self.counts[items], self.counts[others]))
        return np.divide(block, norm, out=np.zeros_like(block, dtype=np.float64), where=norm > 0)

    def facts(self, history: np.ndarray, candidates: Sequence[int]) -> list[str]:
        history = np.asarray(history, np.int64)[-self.recent:] if self.recent else np.asarray(history, np.int64)
        if not len(history):
            return []
        related = _related_history(self.score(candidates, history), history, candidates, self.top_k, self.max_facts)
        return [f"People who watched {self._names(found)} also watched {item_name(self.catalog, c)}."
                for c, found in related]


@gin.configurable(denylist=["vectors", "catalog"])
class EmbeddingNeighbours(KnowledgeProvider):
    """Nearest history items of each candidate in an item-vector space (cosine similarity).

    Args:
        vectors: float [N+1, D] item vectors, row i for item index i (row 0 unused), e.g. the
            item-text embeddings of :func:`embedding_vectors`.
        catalog: the item catalogue.
        top_k: history items named per candidate.
        min_similarity: neighbours below this cosine are not named.
        recent: only the last ``recent`` history items are compared (``None``: all).
        max_facts: sentences kept, for the candidates with the most similar history items (``None``: all).
    """

    name = "neighbours"

    def __init__(self, vectors: np.ndarray, catalog: ItemCatalog, top_k: int = 2, min_similarity: float = 0.5,
                 recent: int | None = 20, max_facts: int | None = 8):
        super().__init__(catalog)
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(catalog.item_ids):
            raise ValueError(f"EmbeddingNeighbours needs one vector per item index 0..N ({len(catalog.item_ids)} "
                             f"rows), got shape {vectors.shape}")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self.vectors = vectors / np.maximum(norms, 1e-12)
        self.top_k, self.min_similarity, self.recent, self.max_facts = top_k, min_similarity, recent, max_facts

    @staticmethod
    def embedding_vectors(catalog: ItemCatalog, model: str = "bundled:all-minilm-l6-v2") -> np.ndarray:
        """Item-text embeddings [N+1, D] (row 0 zeros), the ones semantic IDs are built from (cached)."""
        from genrec.semantic_ids.embed import embed_texts

        texts = embed_texts(catalog.texts(require_text=True), model=model)
        return np.vstack([np.zeros((1, texts.shape[1]), np.float32), texts])

    def similarity(self, items: Sequence[int], others: Sequence[int]) -> np.ndarray:
        """Cosine similarity [len(items), len(others)]."""
        return self.vectors[np.asarray(items, np.int64)] @ self.vectors[np.asarray(others, np.int64)].T

    def facts(self, history: np.ndarray, candidates: Sequence[int]) -> list[str]:
        history = np.asarray(history, np.int64)[-self.recent:] if self.recent else np.asarray(history, np.int64)
        if not len(history):
            return []
        similarity = self.similarity(candidates, history)
        similarity = np.where(similarity >= self.min_similarity, similarity, 0.0)
        related = _related_history(similarity, history, candidates, self.top_k, self.max_facts)
        return [f"{item_name(self.catalog, c)} is similar to {self._names(found)}." for c, found in related]


@gin.configurable(denylist=["model", "catalog"])
class RecommenderKnowledge(KnowledgeProvider):
    """A trained recommender's order of the candidates (DOKE's SASRec user-to-item lists).

    Args:
        model: a scoring :class:`~genrec.models.base.Recommender` (``score(histories)``).
        catalog: the item catalogue.
        top_k: candidates named, best first.
    """

    name = "recommender"

    def __init__(self, model, catalog: ItemCatalog, top_k: int = 5):
        super().__init__(catalog)
        if top_k < 1:
            raise ValueError(f"RecommenderKnowledge.top_k must be >= 1, got {top_k}")
        self.model, self.top_k = model, top_k

    def order(self, history: np.ndarray, candidates: Sequence[int]) -> np.ndarray:
        """The candidates (item indices) sorted by the recommender's score, best first (stable)."""
        candidates = np.asarray(candidates, np.int64)
        with torch.no_grad():
            scores = self.model.score([np.asarray(history, np.int64)]).float()[0].cpu().numpy()
        return candidates[np.argsort(-scores[candidates], kind="stable")]

    def facts(self, history: np.ndarray, candidates: Sequence[int]) -> list[str]:
        if not len(history):
            return []
        best = self.order(history, candidates)[:self.top_k]
        return [f"A recommender trained on many users ranks these candidates highest: {self._names(best)}."]


@gin.configurable(denylist=["catalog"])
class AttributeKnowledge(KnowledgeProvider):
    """Item attributes of each candidate and the user's most frequent values of a multi-valued field.

    Args:
        catalog: the item catalogue.
        fields: fields written per candidate (missing ones are skipped).
        profile_field: comma-separated field summarised over the history (``None``: no profile).
        profile_top: values named in the profile.
    """

    name = "attributes"

    def __init__(self, catalog: ItemCatalog, fields: Sequence[str] = ("genres",), profile_field: str | None = "genres",
                 profile_top: int = 3):
        super().__init__(catalog)
        self.fields = [f for f in fields if f in catalog.fields]
        self.profile_field = profile_field if profile_field in catalog.fields else None
        self.profile_top = profile_top

    def values(self, item: int, field: str) -> list[str]:
        """The comma-separated values of ``field`` for item index ``item``."""
        return [v.strip() for v in self.catalog.fields[field][item].split(",") if v.strip()]

    def profile(self, history: np.ndarray) -> list[tuple[str, int]]:
        """The ``profile_top`` most frequent ``profile_field`` values in the history, with counts."""
        if self.profile_field is None:
            return []
        counts = Counter(v for i in history for v in self.values(int(i), self.profile_field))
        return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:self.profile_top]

    def facts(self, history: np.ndarray, candidates: Sequence[int]) -> list[str]:
        out = []
        top = self.profile(history)
        if top:
            out.append(f"Of the user's {len(history)} movies, the most frequent {self.profile_field} are "
                       + ", ".join(f"{v} ({n})" for v, n in top) + ".")
        for c in candidates:
            parts = [f"{f}: {', '.join(self.values(int(c), f))}" for f in self.fields if self.values(int(c), f)]
            if parts:
                out.append(f"{item_name(self.catalog, int(c))}: {'; '.join(parts)}.")
        return out
