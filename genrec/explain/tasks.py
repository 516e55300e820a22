"""RecExplainer's alignment tasks, written from a target recommender's own outputs, in one of three modes.

Every answer is what the **target model** does, not what the user did (RecAI's RecExplainer):

* ``next``: the target's top-1 item for the user (its history items excluded);
* ``rank``: 5 items drawn from the target's top ``rank_pool``, shown shuffled; the answer lists them in
  the target's order, one per line;
* ``interest``: an item from the target's top ``interest_top`` ("Yes") or one it ranks below
  ``negative_from`` ("No");
* ``recovery`` (placeholder modes): the title of an ``<item>`` shown without its title;
* ``history`` (intention mode): the user's recent titles from ``<user>`` alone.

A user is rendered by :meth:`AlignmentTasks.user_text` (``behaviour``: recent history titles;
``intention``: ``<user>``; ``hybrid``: both) and an item by :meth:`AlignmentTasks.item_text` (its title,
followed by ``<item>`` in the placeholder modes). Each :class:`Example` carries the vectors of its
placeholders in order of appearance: the target's user vector and item vectors
(:func:`genrec.explain.target.user_vectors`, :func:`~genrec.explain.target.item_vectors`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import gin
import numpy as np
import torch

from genrec.data import ItemCatalog
from genrec.explain.model import ITEM, MODES, USER
from genrec.knowledge.providers import item_name

__all__ = ["TASKS", "AlignmentTasks", "Example"]

TASKS = ("next", "rank", "interest", "recovery", "history")


@dataclass
class Example:
    """One prompt and answer with its placeholder vectors; ``items`` are the items shown or asked for,
    ``truth`` (``rank``) the shown items in the target's order."""

    task: str
    prompt: str
    answer: str
    user_vectors: torch.Tensor
    item_vectors: torch.Tensor
    items: list[int] = field(default_factory=list)
    truth: list[int] = field(default_factory=list)


@gin.configurable(denylist=["scores", "user_vecs", "item_vecs", "histories", "catalog", "mode"])
class AlignmentTasks:
    """Writes alignment examples for users from the target's scores (module docstring).

    Args:
        scores: float [U, N+1], the target's scores of every item for each user (history masked to -inf).
        user_vecs: [U, r] the target's user vectors; item_vecs: [N+1, r] its item vectors.
        histories: per user, the time-ordered history item indices.
        catalog: the item catalogue (titles).
        mode: ``behaviour``, ``intention`` or ``hybrid``.
        tasks: the task names trained (``recovery`` and ``history`` only where the mode has placeholders).
        history_items: recent titles that describe a user in text.
        rank_pool: the ``rank`` task draws its 5 items from the target's top ``rank_pool``.
        interest_top: "Yes" items come from the target's top ``interest_top``.
        negative_from: "No" items come from the target's ranks ``negative_from`` and below.
    """

    def __init__(self, scores: torch.Tensor, user_vecs: torch.Tensor, item_vecs: torch.Tensor,
                 histories: Sequence[np.ndarray], catalog: ItemCatalog, mode: str,
                 tasks: Sequence[str] = TASKS, history_items: int = 5, rank_pool: int = 20,
                 interest_top: int = 10, negative_from: int = 200):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
        unknown = [t for t in tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"AlignmentTasks.tasks has unknown tasks {unknown}; use any of {', '.join(TASKS)}")
        self.mode, self.catalog, self.histories = mode, catalog, histories
        self.user_vecs, self.item_vecs = user_vecs, item_vecs
        self.order = torch.argsort(scores, dim=1, descending=True, stable=True).numpy()  # [U, N+1] best first
        self.tasks = [t for t in tasks if mode != "behaviour" or t not in ("recovery", "history")]
        self.tasks = [t for t in self.tasks if t != "history" or mode == "intention"]
        self.history_items, self.rank_pool = history_items, rank_pool
        self.interest_top, self.negative_from = interest_top, negative_from

    # ------------------------------------------------------------------ rendering

    def user_text(self, user: int) -> str:
        names = "; ".join(item_name(self.catalog, int(i)) for i in self.histories[user][-self.history_items:])
        if self.mode == "behaviour":
            return f"A user recently watched: {names}."
        if self.mode == "intention":
            return f"A user {USER}."
        return f"A user {USER} recently watched: {names}."

    def item_text(self, item: int) -> str:
        name = item_name(self.catalog, item)
        return name if self.mode == "behaviour" else f"{name} {ITEM}"

    def example(self, task: str, user: int | None, prompt: str, answer: str, items: list[int]) -> Example:
        """An example whose placeholder vectors follow the order of the markers in ``prompt``."""
        uses_user = user is not None and USER in prompt
        shown = [i for i in items if self.mode != "behaviour"]
        user_vectors = self.user_vecs[[user] * prompt.count(USER)] if uses_user else self.user_vecs[:0]
        return Example(task, prompt, answer, user_vectors, self.item_vecs[shown[:prompt.count(ITEM)]], items)

    def ranked(self, user: int) -> np.ndarray:
        """The target's items for ``user``, best first, padding and history excluded."""
        seen = set(self.histories[user].tolist()) | {0}
        return np.array([i for i in self.order[user] if i not in seen])

    # ------------------------------------------------------------------ tasks

    def next_item(self, user: int) -> Example:
        top = int(self.ranked(user)[0])
        prompt = f"{self.user_text(user)} Which movie will the recommender suggest next? Answer:"
        return self.example("next", user, prompt, " " + item_name(self.catalog, top), [top])

    def rank(self, user: int, rng: np.random.Generator) -> Example:
        pool = self.ranked(user)[:self.rank_pool]
        chosen = np.sort(rng.choice(len(pool), 5, replace=False))  # target order: lower position = better
        shown = [int(pool[j]) for j in rng.permutation(chosen)]
        listing = "; ".join(self.item_text(i) for i in shown)
        prompt = f"{self.user_text(user)} Rank these movies as the recommender would: {listing}. Answer:"
        answer = "".join(f"\n{item_name(self.catalog, int(pool[j]))}" for j in chosen)
        example = self.example("rank", user, prompt, answer, shown)
        example.truth = [int(pool[j]) for j in chosen]
        return example

    def interest(self, user: int, positive: bool, rng: np.random.Generator) -> Example:
        ranked = self.ranked(user)
        pool = ranked[:self.interest_top] if positive else ranked[self.negative_from:]
        item = int(pool[rng.integers(len(pool))])
        prompt = (f"{self.user_text(user)} Would the recommender suggest {self.item_text(item)}? "
                  "Answer yes or no. Answer:")
        return self.example("interest", user, prompt, " Yes" if positive else " No", [item])

    def recovery(self, item: int) -> Example:
        return self.example("recovery", None, f"Which movie is {ITEM}? Answer:", " " + item_name(self.catalog, item),
                             [item])

    def history(self, user: int) -> Example:
        names = "; ".join(item_name(self.catalog, int(i)) for i in self.histories[user][-self.history_items:])
        return self.example("history", user, f"{self.user_text(user)} Which movies did the user watch recently? "
                             "Answer:", " " + names, [])

    def examples(self, users: Sequence[int], seed: int = 0) -> list[Example]:
        """One example of every task per user (interest: a Yes or a No at random), in user order."""
        rng = np.random.default_rng(seed)
        out = []
        for user in users:
            for task in self.tasks:
                if task == "next":
                    out.append(self.next_item(user))
                elif task == "rank":
                    out.append(self.rank(user, rng))
                elif task == "interest":
                    out.append(self.interest(user, bool(rng.integers(2)), rng))
                elif task == "recovery":
                    out.append(self.recovery(int(self.ranked(user)[rng.integers(self.rank_pool)])))
                else:
                    out.append(self.history(user))
        return out
