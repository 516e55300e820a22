"""DOKE's Knowledge Plugin: providers' knowledge in a prompt, an LLM re-ranks the candidates.

:class:`KnowledgePlugin` composes knowledge providers (:mod:`genrec.knowledge.providers`), a
:class:`~genrec.knowledge.prompt.PromptTemplate` and an :class:`~genrec.knowledge.rerank.LLMReranker`.
``rank(history, candidates, use_knowledge)`` returns the candidates best first; with
``use_knowledge=False`` the same template, history and candidates render without the knowledge
segment, which is the baseline DOKE compares against.

With ``generation`` scoring the LLM's answer is split and mapped back to items with
:class:`genrec.evaluation.title_matcher.TitleMatcher` (candidates tried first); candidates it does not
name follow in the shown order, so every list is a permutation of the candidates.
:func:`candidate_lists` draws DOKE's 20-candidate lists (1 positive + 19 negatives the user never saw,
seeded, shuffled).
"""

from __future__ import annotations

from collections.abc import Sequence

import gin
import numpy as np

from genrec.data import ItemCatalog
from genrec.evaluation.protocols import sample_negatives
from genrec.evaluation.title_matcher import TitleMatcher
from genrec.knowledge.prompt import PromptTemplate
from genrec.knowledge.providers import (AttributeKnowledge, CooccurrenceKnowledge, EmbeddingNeighbours,
                                        KnowledgeProvider, RecommenderKnowledge, item_name)
from genrec.knowledge.rerank import LLMReranker

__all__ = ["PROVIDERS", "KnowledgePlugin", "candidate_lists", "make_providers"]

PROVIDERS = ("cooccurrence", "neighbours", "recommender", "attributes")


def candidate_lists(num_items: int, histories: Sequence[np.ndarray], targets: np.ndarray, size: int = 20,
                    seed: int = 0) -> np.ndarray:
    """int64 [B, size]: each row's target and ``size - 1`` unseen negatives, in a seeded random order."""
    if size < 2:
        raise ValueError(f"a candidate list needs the target and at least one negative; got size {size}")
    negatives = sample_negatives(num_items, histories, targets, size - 1, seed)
    lists = np.concatenate([np.asarray(targets, np.int64)[:, None], negatives], axis=1)
    rng = np.random.default_rng(seed)
    return np.stack([row[rng.permutation(size)] for row in lists])


@gin.configurable(denylist=["sequences", "num_items", "catalog", "recommender"])
def make_providers(sequences: Sequence[np.ndarray], num_items: int, catalog: ItemCatalog, recommender=None,
                   names: Sequence[str] = PROVIDERS,
                   embedding_model: str = "bundled:all-minilm-l6-v2") -> list[KnowledgeProvider]:
    """The providers ``names`` in order, built from the training data (each provider's settings in gin).

    Args:
        sequences: per user, the training item indices (co-occurrence).
        num_items: N.
        catalog: the item catalogue.
        recommender: a trained scoring recommender, needed for ``recommender``.
        names: any of :data:`PROVIDERS`, in prompt order.
        embedding_model: text encoder of the item-text embeddings for ``neighbours``.
    """
    unknown = [name for name in names if name not in PROVIDERS]
    if unknown:
        raise ValueError(f"make_providers.names has unknown providers {unknown}; use any of {', '.join(PROVIDERS)}")
    if "recommender" in names and recommender is None:
        raise ValueError("make_providers.names includes 'recommender' but no trained recommender was given")
    build = {"cooccurrence": lambda: CooccurrenceKnowledge(sequences, num_items, catalog),
             "neighbours": lambda: EmbeddingNeighbours(
                 EmbeddingNeighbours.embedding_vectors(catalog, embedding_model), catalog),
             "recommender": lambda: RecommenderKnowledge(recommender, catalog),
             "attributes": lambda: AttributeKnowledge(catalog)}
    return [build[name]() for name in names]


@gin.configurable(denylist=["providers", "reranker", "catalog"])
class KnowledgePlugin:
    """Knowledge-augmented LLM re-ranking (see the module docstring).

    Args:
        providers: knowledge providers, their sentences in this order.
        reranker: the LLM that orders candidates.
        catalog: the item catalogue (names).
        template: the prompt template (``None``: :class:`PromptTemplate` as gin binds it).
        history_items: most recent history items named in the prompt.
        max_facts: sentences kept per provider (``None``: all; providers also limit their own).
    """

    def __init__(self, providers: Sequence[KnowledgeProvider], reranker: LLMReranker, catalog: ItemCatalog,
                 template: PromptTemplate | None = None, history_items: int = 10, max_facts: int | None = None):
        if history_items < 1:
            raise ValueError(f"KnowledgePlugin.history_items must be >= 1, got {history_items}")
        self.providers, self.reranker, self.catalog = list(providers), reranker, catalog
        self.template = PromptTemplate() if template is None else template
        self.history_items, self.max_facts = history_items, max_facts
        self._matcher = None

    @property
    def matcher(self) -> TitleMatcher:
        """The title matcher over the catalogue (built on first use)."""
        if self._matcher is None:
            names = [item_name(self.catalog, i) for i in range(1, len(self.catalog.item_ids))]
            self._matcher = TitleMatcher(names, ids=self.catalog.item_ids[1:])
        return self._matcher

    def knowledge(self, history: np.ndarray, candidates: Sequence[int]) -> list[str]:
        """Every provider's sentences for this user and candidates, in provider order."""
        out = []
        for provider in self.providers:
            facts = provider.facts(history, candidates)
            out += facts[:self.max_facts] if self.max_facts is not None else facts
        return out

    def prompt(self, history: np.ndarray, candidates: Sequence[int], use_knowledge: bool = True) -> str:
        """The rendered prompt; without knowledge the knowledge segment is left out."""
        names = [item_name(self.catalog, int(i)) for i in np.asarray(history)[-self.history_items:]]
        shown = [item_name(self.catalog, int(c)) for c in candidates]
        return self.template.render(names, shown, self.knowledge(history, candidates) if use_knowledge else ())

    def rank(self, history: np.ndarray, candidates: Sequence[int], use_knowledge: bool = True) -> np.ndarray:
        """The candidates (item indices) best first, a permutation of ``candidates``."""
        candidates = np.asarray(candidates, np.int64)
        prompt = self.prompt(history, candidates, use_knowledge)
        if self.reranker.scoring == "likelihood":
            scores = self.reranker.likelihoods(prompt, [item_name(self.catalog, int(c)) for c in candidates])
            return candidates[np.argsort(-scores, kind="stable")]
        return self.order_from_text(self.reranker.generate(prompt), candidates)

    def order_from_text(self, answer: str, candidates: np.ndarray) -> np.ndarray:
        """Candidates in the order the answer names them (matched titles), then the unnamed ones as shown."""
        named = []
        for item in self.matcher.match_list(answer, candidates=list(candidates)):
            if item is not None and item in candidates and item not in named:
                named.append(item)
        rest = [int(c) for c in candidates if int(c) not in named]
        return np.array(named + rest, dtype=np.int64)
