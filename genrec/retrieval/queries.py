"""Text queries for item retrieval, generated from interactions and item attributes without an API.

RecLM-emb (Lei et al., WWW'24 companion, arXiv 2402.18899) fine-tunes a text encoder so that a text
query retrieves the text of the item it asks for. Several of its ten query types need GPT-4 to
write the query; these are the ones a template can write from the data alone (its names):

* ``uh2i``: a user's history (newest first, at most ``history_titles`` titles) -> the next item;
* ``i2i``: an item's title -> an item often watched next to it (co-occurrence within
  ``cooccurrence_window`` positions of the training sequences; evaluation counts the top 10 as
  relevant);
* ``fa2i``: all attributes but the title (genres and year) -> the item;
* ``sa2i``: sparse attributes (one genre and the decade) -> the item;
* ``nm2i``: a misspelled title (character swaps, drops, doublings, substitutions) -> the item;
* ``na2i``: a genre the item has and genres it does not have ("not ...") -> the item;
* ``uq2i``: history plus a request for one genre of the next item -> the next item.

Held out: users are split into train / valid / test groups and items likewise (``holdout``
fractions, seeded). Training queries come only from training users and never have a held-out item
as their answer; ``valid`` and ``test`` user queries (``uh2i``, ``uq2i``) ask for each of the last ``eval_positions``
items of a held-out user, item queries ask for a held-out item. Histories exclude the answer, and retrieval
leaves the history items (and an ``i2i`` query's own item) out of the ranking.

A :class:`Query` names its answer item(s) and, for training, sampled negatives: ``num_negatives``
random items that are not an answer and not in the history (RecLM-emb samples 7).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

import gin
import numpy as np

from genrec.data import ItemCatalog, Interactions

__all__ = ["QUERY_TYPES", "Query", "QueryGenerator", "misspell"]

QUERY_TYPES = ("uh2i", "i2i", "fa2i", "sa2i", "nm2i", "na2i", "uq2i")

_HISTORY_TEMPLATES = (
    "The user recently watched: {titles}. What should they watch next?",
    "Watch history, newest first: {titles}. Recommend the next movie.",
    "Given someone who liked {titles}, suggest a movie for them.",
)
_UQ_TEMPLATES = (
    "The user recently watched: {titles}. Now they want a {genre} movie.",
    "After {titles}, I am in the mood for something {genre}.",
)
_I2I_TEMPLATES = ("Movies similar to {title}", "People who watched {title} also watched", "More like {title}")
_FA_TEMPLATES = ("A {genres} movie released in {year}.", "Find me a film from {year} that is {genres}.")
_SA_TEMPLATES = ("A {genre} movie from the {decade}.", "Some {genre} film of the {decade}")
_NA_TEMPLATES = ("A {genre} movie that is not {negated}.", "I want {genre}, but no {negated}.")


@dataclass
class Query:
    """One retrieval query.

    Attributes:
        kind: one of :data:`QUERY_TYPES`.
        text: the query text.
        answers: item indices (1..N) that count as relevant; training uses ``answers[0]`` as positive.
        exclude: item indices left out of the ranking (history, the query's own item).
        negatives: sampled negative item indices (training queries only).
    """

    kind: str
    text: str
    answers: list[int]
    exclude: list[int] = field(default_factory=list)
    negatives: list[int] = field(default_factory=list)


def misspell(title: str, rng: random.Random, edits: int = 2) -> str:
    """``title`` with ``edits`` random character edits (swap, drop, double, substitute) in its letters."""
    chars = list(title)
    for _ in range(edits):
        letters = [i for i, c in enumerate(chars) if c.isalpha()]
        if len(letters) < 3:
            break
        i = rng.choice(letters)
        op = rng.randrange(4)
        if op == 0 and i + 1 < len(chars):
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
        elif op == 1:
            del chars[i]
        elif op == 2:
            chars.insert(i, chars[i])
        else:
            chars[i] = rng.choice("abcdefghijklmnopqrstuvwxyz")
    return "".join(chars)


def _genres(catalog: ItemCatalog, item: int) -> list[str]:
    return [g for g in catalog.fields.get("genres", [""] * (item + 1))[item].split(", ") if g and g != "unknown"]


def _decade(year: str) -> str:
    return f"{year[:3]}0s" if len(year) == 4 and year.isdigit() else ""


@gin.configurable
class QueryGenerator:
    """Writes the queries of :data:`QUERY_TYPES` for one dataset (see the module docstring).

    Args:
        interactions, catalog: the dataset.
        seed: seeds the held-out groups, templates, misspellings and negatives.
        holdout: fraction of users, and of items, in each of ``valid`` and ``test``.
        history_titles: most recent titles in a history query.
        num_negatives: sampled negatives per training query.
        train_per_user: training ``uh2i`` / ``uq2i`` queries per training user (random positions).
        train_per_item: training queries of each item type per training item.
        eval_per_type: at most this many ``valid`` / ``test`` queries per type (``None``: all).
        eval_positions: held-out user queries ask for each of the user's last this many items.
        cooccurrence_window: positions either side that count as co-occurring for ``i2i``.
        types: the query types to write.
    """

    def __init__(self, interactions: Interactions, catalog: ItemCatalog, seed: int = 0, holdout: float = 0.1,
                 history_titles: int = 10, num_negatives: int = 7, train_per_user: int = 4, train_per_item: int = 1,
                 eval_per_type: int | None = 200, eval_positions: int = 3, cooccurrence_window: int = 3,
                 types: tuple[str, ...] = QUERY_TYPES):
        unknown = sorted(set(types) - set(QUERY_TYPES))
        if unknown or not types:
            raise ValueError(f"QueryGenerator.types = {list(types)!r}: use a non-empty subset of {list(QUERY_TYPES)}")
        if not 0 < holdout < 0.5:
            raise ValueError(f"QueryGenerator.holdout = {holdout!r} cannot work; it must be in (0, 0.5)")
        self.interactions, self.catalog, self.seed = interactions, catalog, seed
        self.history_titles, self.num_negatives = history_titles, num_negatives
        self.train_per_user, self.train_per_item, self.eval_per_type = train_per_user, train_per_item, eval_per_type
        self.eval_positions = eval_positions
        self.types = tuple(types)
        self.num_items = interactions.num_items
        rng = np.random.default_rng(seed)
        self.user_group = self._groups(rng, interactions.num_users, holdout)
        self.item_group = np.concatenate([["pad"], self._groups(rng, self.num_items, holdout)])
        self.all_genres = sorted({g for i in range(1, self.num_items + 1) for g in _genres(catalog, i)})
        self.neighbours = self._cooccurrence(cooccurrence_window)

    @staticmethod
    def _groups(rng: np.random.Generator, n: int, holdout: float) -> np.ndarray:
        draw = rng.random(n)
        return np.where(draw < holdout, "valid", np.where(draw < 2 * holdout, "test", "train"))

    def _cooccurrence(self, window: int) -> list[list[int]]:
        """Per item, the other items ranked by co-occurrence in training users' sequences."""
        counts = [Counter() for _ in range(self.num_items + 1)]
        for user, sequence in enumerate(self.interactions.sequences):
            if self.user_group[user] != "train":
                continue
            seq = sequence.tolist()
            for i, a in enumerate(seq):
                for b in seq[max(0, i - window):i]:
                    if a != b:
                        counts[a][b] += 1
                        counts[b][a] += 1
        return [[item for item, _ in c.most_common(50)] for c in counts]

    def title(self, item: int) -> str:
        title = self.catalog.fields.get("title", self.catalog.item_ids)[item]
        return title or self.catalog.item_ids[item]

    def _history_text(self, history: list[int]) -> str:
        recent = history[::-1][:self.history_titles]
        return ", ".join(self.title(i) for i in recent)

    def _negatives(self, rng: random.Random, avoid: set[int]) -> list[int]:
        out: list[int] = []
        while len(out) < self.num_negatives:
            item = rng.randint(1, self.num_items)
            if item not in avoid and item not in out:
                out.append(item)
        return out

    # ---- one query per (type, user position or item); None when the item cannot make one

    def user_query(self, kind: str, history: list[int], target: int, rng: random.Random) -> Query | None:
        titles = self._history_text(history)
        if kind == "uh2i":
            text = rng.choice(_HISTORY_TEMPLATES).format(titles=titles)
        else:
            genres = _genres(self.catalog, target)
            if not genres:
                return None
            text = rng.choice(_UQ_TEMPLATES).format(titles=titles, genre=rng.choice(genres))
        return Query(kind, text, [target], exclude=sorted(set(history) - {target}))

    def item_query(self, kind: str, item: int, rng: random.Random, training: bool) -> Query | None:
        genres, year = _genres(self.catalog, item), self.catalog.fields.get("year", [""] * (item + 1))[item]
        if kind == "i2i":
            near = [n for n in self.neighbours[item] if self.item_group[n] == "train" or not training]
            if not near:
                return None
            answers = [rng.choice(near[:10])] if training else near[:10]
            text = rng.choice(_I2I_TEMPLATES).format(title=self.title(item))
            return Query(kind, text, answers, exclude=[item])
        if kind == "nm2i":
            return Query(kind, misspell(self.title(item), rng), [item])
        if not genres:
            return None
        if kind == "fa2i":
            if not year:
                return None
            return Query(kind, rng.choice(_FA_TEMPLATES).format(genres=", ".join(genres), year=year), [item])
        if kind == "sa2i":
            decade = _decade(year)
            if not decade:
                return None
            return Query(kind, rng.choice(_SA_TEMPLATES).format(genre=rng.choice(genres), decade=decade), [item])
        absent = [g for g in self.all_genres if g not in genres]
        negated = rng.sample(absent, min(2, len(absent)))
        return Query(kind, rng.choice(_NA_TEMPLATES).format(genre=rng.choice(genres), negated=" or ".join(negated)),
                     [item])

    def queries(self, which: str) -> list[Query]:
        """The queries of ``train``, ``valid`` or ``test`` (see the module docstring)."""
        if which not in ("train", "valid", "test"):
            raise ValueError(f"unknown query set {which!r}; use 'train', 'valid' or 'test'")
        rng = random.Random(f"{self.seed}-{which}")
        training = which == "train"
        out: list[Query] = []
        for kind in self.types:
            rows: list[Query] = []
            if kind in ("uh2i", "uq2i"):
                for user, sequence in enumerate(self.interactions.sequences):
                    if self.user_group[user] != which or len(sequence) < 2:
                        continue
                    seq = sequence.tolist()
                    if training:
                        positions = rng.sample(range(1, len(seq)), min(self.train_per_user, len(seq) - 1))
                        positions = [p for p in positions if self.item_group[seq[p]] == "train"]
                    else:
                        positions = list(range(max(1, len(seq) - self.eval_positions), len(seq)))
                    for p in positions:
                        query = self.user_query(kind, seq[:p], seq[p], rng)
                        if query is not None:
                            rows.append(query)
            else:
                items = [i for i in range(1, self.num_items + 1) if self.item_group[i] == which]
                for item in items:
                    for _ in range(self.train_per_item if training else 1):
                        query = self.item_query(kind, item, rng, training)
                        if query is not None:
                            rows.append(query)
            if not training and self.eval_per_type is not None and len(rows) > self.eval_per_type:
                rows = rng.sample(rows, self.eval_per_type)
            out.extend(rows)
        if training:
            for query in out:
                query.negatives = self._negatives(rng, set(query.answers) | set(query.exclude))
        return out
