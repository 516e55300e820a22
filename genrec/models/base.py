"""The one recommender contract every genrec model follows.

Two kinds of model share it:

* **scoring models** (SASRec, content-based, CLLM4Rec, most-popular) implement :meth:`Recommender.score`,
  a score for every catalogue item; :meth:`Recommender.recommend_indices` is its top-k.
* **generative models** (LC-Rec, TIGER) set ``generative = True`` and implement
  :meth:`Recommender.recommend_indices` directly (trie-constrained beam search); they cannot score
  every item, so they are evaluated from ranked lists (full-ranking protocol only).

Every method takes the same arguments in the same order: ``histories`` (one time-ordered array of
item indices per user, oldest first), then ``k``, then ``users`` (user indices, or ``None`` for
models that do not know users). :meth:`Recommender.recommend` is the user-facing form over raw ids and
returns, for every user, ``k`` pairs ``(raw item id, score)``, best first.

Indices: items are 1..N (0 is padding), users 0..U-1; ``item_ids[i]`` is item i's raw id.
Shapes: B users, N items, k list length.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from torch import nn

__all__ = ["Recommender", "as_histories"]


def as_histories(histories, where: str = "histories") -> list[Sequence]:
    """Checks that ``histories`` is a list of per-user histories; returns it as a list."""
    if isinstance(histories, (str, bytes)) or not isinstance(histories, (Sequence, np.ndarray)):
        raise ValueError(f"{where} must be a list of histories, one per user, each a list of item ids")
    return list(histories)


class Recommender(nn.Module):
    """Base class of every genrec model; see the module docstring for the contract.

    Attributes:
        generative: True for models that generate item lists instead of scoring every item.
        item_ids: raw item ids, index 0 the padding entry; set by :meth:`set_item_ids` (trainers
            do it from the data, saved models restore it).
        user_ids: raw user ids of users 0..U-1 for models that know users (:meth:`set_user_ids`).
    """

    generative: ClassVar[bool] = False

    def __init__(self):
        super().__init__()
        self.item_ids: list[str] | None = None
        self._item_lookup: dict[str, int] = {}
        self.user_ids: list[str] | None = None
        self._user_lookup: dict[str, int] = {}

    # ------------------------------------------------------------------ ids

    def set_item_ids(self, item_ids: Sequence[str]) -> None:
        """Names items 1..N by their raw ids (``item_ids[0]`` is the padding entry)."""
        self.item_ids = [str(i) for i in item_ids]
        self._item_lookup = {raw: i for i, raw in enumerate(self.item_ids) if i > 0}

    def item_index(self, raw_id: str) -> int:
        """Item index of a raw item id; ValueError naming the id when it is unknown."""
        if self.item_ids is None:
            raise ValueError(f"this {type(self).__name__} has no item ids; call set_item_ids(interactions.item_ids)")
        try:
            return self._item_lookup[str(raw_id)]
        except KeyError:
            example = self.item_ids[1] if len(self.item_ids) > 1 else None
            raise ValueError(f"unknown item id {raw_id!r}: not among this model's {len(self.item_ids) - 1} items "
                             f"(e.g. {example!r})") from None

    def set_user_ids(self, user_ids: Sequence[str]) -> None:
        """Names users 0..U-1 by their raw ids (models that know users: a user token or table row)."""
        self.user_ids = [str(u) for u in user_ids]
        self._user_lookup = {raw: u for u, raw in enumerate(self.user_ids)}

    def user_index(self, raw_id: str) -> int:
        """User index of a raw user id; ValueError naming the id when it is unknown."""
        if self.user_ids is None:
            raise ValueError(f"this {type(self).__name__} has no user ids; recommend from histories alone "
                             "(users=None), or call set_user_ids(interactions.user_ids)")
        try:
            return self._user_lookup[str(raw_id)]
        except KeyError:
            raise ValueError(f"unknown user id {raw_id!r}: not among this model's {len(self.user_ids)} users (e.g. "
                             f"{self.user_ids[0]!r}); leave the user out (users=None) to recommend for a new user "
                             "from its history") from None

    # ------------------------------------------------------------------ the contract

    def score(self, histories: Sequence[np.ndarray], users: np.ndarray | None = None) -> torch.Tensor:
        """Float32 scores [B, N+1] of every item after each history (column 0 is never recommended)."""
        raise NotImplementedError(f"{type(self).__name__} generates item lists; use recommend_indices")

    def recommend_indices(self, histories: Sequence[np.ndarray], k: int = 10,
                          users: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k item indices LongTensor [B, k] and their float32 scores [B, k], best first.

        The default ranks :meth:`score`; generative models override it. Entries a model cannot fill
        (fewer than k reachable items) are item -1 with score -inf.
        """
        scores = self.score(histories, users).float()
        if not 1 <= k <= scores.shape[1] - 1:
            raise ValueError(f"k must be in 1..{scores.shape[1] - 1} (the number of items), got {k}")
        scores = scores.clone()
        scores[:, 0] = float("-inf")
        top, items = scores.topk(k, dim=1)
        return items, top

    def recommend(self, histories: Sequence[Sequence[str]], k: int = 10,
                  users: Sequence[str] | None = None) -> list[list[tuple[str, float]]]:
        """Top-k ``(raw item id, score)`` pairs per user, best first, for histories of raw item ids.

        Args:
            histories: one list of raw item ids per user, oldest first.
            k: list length.
            users: raw user ids, one per history, for models that know users; ``None`` otherwise.
        """
        histories = as_histories(histories)
        if not histories:
            raise ValueError("recommend got no histories; give one list of item ids per user, e.g. "
                             "recommend([['1', '50']], k=10)")
        indices = []
        for b, history in enumerate(histories):
            if isinstance(history, (str, bytes)) or len(history) == 0:
                raise ValueError(f"history {b} is {'a string' if isinstance(history, (str, bytes)) else 'empty'}; "
                                 "give each user a non-empty list of item ids")
            indices.append(np.array([self.item_index(raw) for raw in history], dtype=np.int64))
        user_rows = None
        if users is not None:
            if len(users) != len(histories):
                raise ValueError(f"{len(users)} users for {len(histories)} histories; give one user per history")
            user_rows = np.array([self.user_index(u) for u in users], dtype=np.int64)
        items, scores = self.recommend_indices(indices, k, user_rows)
        return [[(self.item_ids[i], float(s)) for i, s in zip(row_items, row_scores) if i > 0]
                for row_items, row_scores in zip(items.tolist(), scores.float().tolist())]
