"""The agent's tools over a shared candidate buffer (InteRecAgent, Huang et al., arXiv 2308.16505).

A plan is a list of ``(tool, argument)`` steps run in order on one :class:`CandidateBuffer`, which
starts as the whole catalogue:

========  =====================  ==============================================================
tool      argument               effect on the buffer
========  =====================  ==============================================================
genre     a genre of the table   hard filter (SQL): keep items of that genre
decade    ``1990s`` ...          hard filter (SQL): keep items released in that decade
title     free text              hard filter (SQL ``LIKE``): keep items whose title contains it
search    free text              soft filter: the ``soft_keep`` items most similar to the text
                                 (text-embedding cosine, RecLM-emb or any encoder)
like      free text (a title)    soft filter: the ``soft_keep`` items most similar to the item the
                                 title names (looked up in the table), that item itself removed
rank      ``history``            ranking: reorder by a genrec recommender's scores for the user's
                                 history (SASRec, any :class:`~genrec.models.base.Recommender`)
lookup    free text (a title)    item look-up: facts about the named items; buffer unchanged
========  =====================  ==============================================================

Filters only ever keep or drop buffer items, never add one. A hard filter that would empty the
buffer is skipped with a note (the user is told), so an over-constrained request still gets an
answer. Mapping to titles is the last step of every answer (:meth:`ToolBox.answer`): the top ``k``
buffer items, minus the user's history, disliked and already shown items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from genrec.agent.items import ItemTable
from genrec.agent.memory import Memory

__all__ = ["CandidateBuffer", "ToolBox"]


@dataclass
class CandidateBuffer:
    """The candidates shared by the steps of a plan, best first once something has ordered them."""

    items: list[int]
    ordered: bool = False
    notes: list[str] = field(default_factory=list)


class ToolBox:
    """The tools of the agent.

    Args:
        table: the item table.
        ranker: a genrec recommender (``score(histories) -> [B, N+1]``); ``None``: no ``rank`` tool.
        retriever: text -> item similarity (:class:`genrec.retrieval.service.ItemRetriever`: ``similarity``,
            ``item_vectors``); ``None``: no ``search`` / ``like`` tools.
        soft_keep: items a soft filter keeps.
    """

    def __init__(self, table: ItemTable, ranker=None, retriever=None, soft_keep: int = 50):
        self.table, self.ranker, self.retriever, self.soft_keep = table, ranker, retriever, soft_keep

    def specs(self) -> dict[str, list[str] | None]:
        """Tool name -> closed argument values, or ``None`` for free text (the planner grammar's input)."""
        specs: dict[str, list[str] | None] = {"genre": self.table.genres, "decade": self.table.decades, "title": None}
        if self.retriever is not None:
            specs.update(search=None, like=None)
        if self.ranker is not None:
            specs["rank"] = ["history"]
        specs["lookup"] = None
        return specs

    def new_buffer(self) -> CandidateBuffer:
        return CandidateBuffer(list(range(1, self.table.num_items + 1)))

    def run(self, plan: Sequence[tuple[str, str]], memory: Memory) -> CandidateBuffer:
        """Runs the steps on a fresh buffer; ranks at the end when no step ordered it (and a ranker exists)."""
        buffer = self.new_buffer()
        specs = self.specs()
        for tool, arg in plan:
            if tool not in specs:
                raise ValueError(f"unknown tool {tool!r}; tools: {', '.join(specs)}")
            getattr(self, f"tool_{tool}")(buffer, arg, memory)
        if not buffer.ordered and self.ranker is not None:
            self.tool_rank(buffer, "history", memory)
        return buffer

    def _hard(self, buffer: CandidateBuffer, kept: list[int], what: str) -> None:
        if kept:
            buffer.items = kept
        else:
            buffer.notes.append(f"no candidate is {what}; that condition was skipped")

    def tool_genre(self, buffer: CandidateBuffer, arg: str, memory: Memory) -> None:
        self._hard(buffer, self.table.filter_genre(buffer.items, arg), f"a {arg} movie")

    def tool_decade(self, buffer: CandidateBuffer, arg: str, memory: Memory) -> None:
        self._hard(buffer, self.table.filter_decade(buffer.items, arg), f"from the {arg}")

    def tool_title(self, buffer: CandidateBuffer, arg: str, memory: Memory) -> None:
        self._hard(buffer, self.table.filter_title(buffer.items, arg), f"titled like {arg!r}")

    def _soft(self, buffer: CandidateBuffer, similarity: np.ndarray, drop: set[int] = frozenset()) -> None:
        order = np.argsort(-similarity, kind="stable")
        buffer.items = [buffer.items[i] for i in order if buffer.items[i] not in drop][:self.soft_keep]
        buffer.ordered = True

    def tool_search(self, buffer: CandidateBuffer, arg: str, memory: Memory) -> None:
        if buffer.items and arg.strip():
            self._soft(buffer, self.retriever.similarity(arg, buffer.items))

    def tool_like(self, buffer: CandidateBuffer, arg: str, memory: Memory) -> None:
        found = self.table.lookup(arg, limit=1)
        if not found:
            buffer.notes.append(f"no movie is titled like {arg!r}")
            return
        vectors = self.retriever.item_vectors
        similarity = vectors[np.asarray(buffer.items) - 1] @ vectors[found[0] - 1]
        self._soft(buffer, similarity, drop={found[0]})

    def tool_rank(self, buffer: CandidateBuffer, arg: str, memory: Memory) -> None:
        history = memory.ranking_history()
        if not history or not buffer.items:
            return
        with torch.inference_mode():
            scores = self.ranker.score([np.asarray(history, dtype=np.int64)])[0].float().cpu().numpy()
        items = np.asarray(buffer.items)
        buffer.items = items[np.argsort(-scores[items], kind="stable")].tolist()
        buffer.ordered = True

    def tool_lookup(self, buffer: CandidateBuffer, arg: str, memory: Memory) -> None:
        found = self.table.lookup(arg, limit=3)
        buffer.notes.append("; ".join(self.table.describe(i) for i in found) if found
                            else f"no movie is titled like {arg!r}")

    def answer(self, buffer: CandidateBuffer, memory: Memory, k: int = 10) -> list[int]:
        """Top ``k`` buffer items that are not in the history, disliked or already shown."""
        unwanted = memory.unwanted() | set(memory.history) | set(memory.liked)
        return [i for i in buffer.items if i not in unwanted][:k]
