"""The re-ranking prompt as a list of segments, each a format string, configured in gin.

As in DOKE's prompt configs (a list of segments: history, candidates, knowledge, instruction), a
:class:`PromptTemplate` names its segments in order and holds one format string per segment name::

    PromptTemplate.segments = ["task", "history", "knowledge", "candidates", "question"]
    PromptTemplate.texts = {"task": "You recommend movies.", ...}   # only the ones to change

Format fields: ``{history}`` (the history names, oldest first), ``{candidates}`` (the candidate
names, in the shown order), ``{knowledge}`` (the providers' sentences, one per line), ``{count}``
(number of candidates). A segment whose fields are all empty (no knowledge: the no-knowledge
baseline) is left out, so the same template renders the prompt with and without knowledge.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence

import gin

__all__ = ["DEFAULT_TEXTS", "PromptTemplate"]

DEFAULT_TEXTS = {
    "task": "You are a movie recommender. Pick the movie this user will watch next.",
    "history": "The user watched these movies, oldest first:\n{history}",
    "knowledge": "Useful knowledge about the candidates:\n{knowledge}",
    "candidates": "Candidate movies ({count}):\n{candidates}",
    "question": "Rank the candidates from the most to the least likely next movie, one title per line.",
}
FIELDS = ("history", "candidates", "knowledge", "count")


@gin.configurable
class PromptTemplate:
    """Renders a prompt from segments (see the module docstring).

    Args:
        segments: segment names, in prompt order; each must have a text.
        texts: segment name -> format string, overriding or extending :data:`DEFAULT_TEXTS`.
        separator: between segments.
        item_separator: between names inside ``{history}`` and ``{candidates}``.
    """

    def __init__(self, segments: Sequence[str] = ("task", "history", "knowledge", "candidates", "question"),
                 texts: Mapping[str, str] | None = None, separator: str = "\n\n", item_separator: str = "\n"):
        self.texts = {**DEFAULT_TEXTS, **dict(texts or {})}
        self.segments = list(segments)
        missing = [s for s in self.segments if s not in self.texts]
        if missing or not self.segments:
            raise ValueError(f"PromptTemplate.segments {self.segments} name segments without text: {missing}; "
                             f"give them in PromptTemplate.texts (known: {sorted(self.texts)})")
        for name in self.segments:
            fields = {f for _, f, _, _ in string.Formatter().parse(self.texts[name]) if f is not None}
            if fields - set(FIELDS):
                raise ValueError(f"PromptTemplate segment {name!r} uses unknown fields {sorted(fields - set(FIELDS))}; "
                                 f"use {', '.join('{' + f + '}' for f in FIELDS)}")
        self.separator, self.item_separator = separator, item_separator

    def render(self, history: Sequence[str], candidates: Sequence[str], knowledge: Sequence[str] = ()) -> str:
        """The prompt text for these names and knowledge sentences (empty knowledge: segment left out)."""
        values = {"history": self.item_separator.join(history), "candidates": self.item_separator.join(candidates),
                  "knowledge": "\n".join(knowledge), "count": str(len(candidates))}
        parts = []
        for name in self.segments:
            text = self.texts[name]
            fields = {f for _, f, _, _ in string.Formatter().parse(text) if f}
            if fields and not any(values[f] for f in fields if f != "count"):
                continue
            parts.append(text.format(**values))
        return self.separator.join(parts)
