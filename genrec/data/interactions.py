"""User-item interaction sequences with contiguous indices, built from an interaction log.

:meth:`Interactions.from_log` turns a log (one row per interaction, in file order: raw user id,
raw item id, timestamp, optional rating) into per-user, time-ordered item sequences:

1. **Rating threshold.** With ``min_rating``, keep rows whose rating is ``>= min_rating``.
2. **k-core.** With ``k_core``, repeatedly drop the rows of users and of items that have fewer
   than ``k`` rows left, until no user and no item has fewer than ``k`` (each repeated
   user-item row counts).
3. **Indices.** Users get indices ``0..U-1`` and items ``1..N`` in order of first appearance
   among the kept rows, in file order; item index 0 is the padding id ``"[PAD]"``.
4. **Order.** Each user's rows are sorted by timestamp with a *stable* sort over file order:
   interactions with the same timestamp keep the order in which they appear in the file. The rule
   matters: in ml-100k, 415 of 943 users have their last two interactions in the same second, so
   the leave-one-out test target depends on it.

Repeated (user, item) rows are kept as repeated interactions.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from genrec.data.catalog import PAD
from genrec.data.splits import SPLITS, Split


@dataclass(frozen=True, eq=False)
class Interactions:
    """Per-user, time-ordered item sequences of one dataset; immutable (arrays are read-only).

    Sequences are sorted by timestamp with a stable sort over file order: interactions in the
    same second keep their file order (ml-100k: 415 of 943 users have their last two interactions
    in the same second). Build instances with :meth:`from_log`.

    Attributes:
        name: Dataset name (``"ml-100k"``, ``"amazon-Beauty"``).
        user_ids: Raw user id of user index ``u`` (``0..U-1``).
        item_ids: Raw item id of item index ``i``; ``item_ids[0] == "[PAD]"``, items are ``1..N``.
        sequences: Per user index, int64 item indices in time order.
        timestamps: Per user index, float64 timestamps aligned with ``sequences``.
    """

    name: str
    user_ids: list[str]
    item_ids: list[str]
    sequences: list[np.ndarray]
    timestamps: list[np.ndarray]

    def __post_init__(self):
        if not self.item_ids or self.item_ids[0] != PAD:
            raise ValueError(f"item_ids[0] must be the padding id {PAD!r}")
        if not len(self.user_ids) == len(self.sequences) == len(self.timestamps):
            raise ValueError("user_ids, sequences and timestamps must have one entry per user")
        for sequence, times in zip(self.sequences, self.timestamps, strict=True):
            if len(sequence) != len(times):
                raise ValueError("each timestamp array must align with its sequence")
            sequence.flags.writeable = False
            times.flags.writeable = False

    @classmethod
    def from_log(cls, name: str, users: Sequence[str], items: Sequence[str], timestamps: np.ndarray,
                 ratings: np.ndarray | None = None, *, min_rating: float | None = None,
                 k_core: int | None = None) -> Interactions:
        """Build sequences from an interaction log in file order (see the module docstring).

        Args:
            name: Dataset name.
            users: Raw user id per row.
            items: Raw item id per row.
            timestamps: [rows] float timestamps.
            ratings: [rows] ratings, or None when the data has none.
            min_rating: Keep rows with ``rating >= min_rating``.
            k_core: Keep the largest subset where every user and item has at least ``k_core`` rows.

        Raises:
            ValueError: Misaligned columns, ``min_rating`` without ratings, ``k_core < 1``, or no
                rows left after filtering.
        """
        timestamps = np.asarray(timestamps, dtype=np.float64)
        if not len(users) == len(items) == len(timestamps) or (ratings is not None and len(ratings) != len(users)):
            raise ValueError(f"dataset {name}: users, items, timestamps and ratings must have one entry per row")
        user_codes, user_names = _factorize(users)
        item_codes, item_names = _factorize(items)
        keep = np.ones(len(user_codes), dtype=bool)
        if min_rating is not None:
            if ratings is None:
                raise ValueError(f"dataset {name} has no ratings, so min_rating={min_rating} cannot apply")
            keep &= np.asarray(ratings, dtype=np.float64) >= min_rating
        if k_core is not None:
            keep = _k_core(user_codes, item_codes, keep, k_core)
        if not keep.any():
            raise ValueError(f"dataset {name}: no interactions left after min_rating={min_rating}, k_core={k_core}")
        user_codes, user_names = _reindex(user_codes[keep], user_names)
        item_codes, item_names = _reindex(item_codes[keep], item_names)
        sequences, times = _group_by_user(user_codes, item_codes + 1, timestamps[keep], len(user_names))
        return cls(name, user_names, [PAD] + item_names, sequences, times)

    @property
    def num_users(self) -> int:
        """Number of users U."""
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        """Number of items N (padding excluded)."""
        return len(self.item_ids) - 1

    @property
    def num_interactions(self) -> int:
        """Total number of interactions."""
        return sum(len(sequence) for sequence in self.sequences)

    def item_index(self, raw_id: str) -> int:
        """Item index (1..N) of a raw item id; KeyError names the dataset and shows example ids."""
        return self._lookup(self._item_lookup, raw_id, "item", self.item_ids[1:4])

    def user_index(self, raw_id: str) -> int:
        """User index (0..U-1) of a raw user id; KeyError names the dataset and shows example ids."""
        return self._lookup(self._user_lookup, raw_id, "user", self.user_ids[:3])

    def _lookup(self, table: dict[str, int], raw_id: str, kind: str, examples: list[str]) -> int:
        try:
            return table[raw_id]
        except KeyError:
            shown = ", ".join(repr(example) for example in examples)
            raise KeyError(f"unknown {kind} id {raw_id!r} in dataset {self.name}; "
                           f"known ids look like {shown}, ...") from None

    @functools.cached_property
    def _item_lookup(self) -> dict[str, int]:
        return {raw: index for index, raw in enumerate(self.item_ids) if index > 0}

    @functools.cached_property
    def _user_lookup(self) -> dict[str, int]:
        return {raw: index for index, raw in enumerate(self.user_ids)}

    @functools.cached_property
    def _fingerprint(self) -> str:
        digest = hashlib.sha256()
        for text in [self.name, *self.user_ids, *self.item_ids]:
            encoded = text.encode("utf-8")
            digest.update(len(encoded).to_bytes(8, "little") + encoded)
        for sequence in self.sequences:
            digest.update(len(sequence).to_bytes(8, "little") + sequence.astype("<i8").tobytes())
        return digest.hexdigest()[:16]

    def fingerprint(self) -> str:
        """16 hex digits of the sha256 of the name, both id maps and the sequences; stable across processes."""
        return self._fingerprint

    def split(self, name: str = "loo", max_history: int | None = None) -> Split:
        """Split into train / valid / test with a function from :data:`SPLITS`.

        Args:
            name: ``"loo"`` (leave-one-out by time) or ``"ratio"`` (per-user 80/10/10).
            max_history: Keep only the most recent ``max_history`` items of each evaluation history.
        """
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; known splits: {', '.join(SPLITS)}")
        return SPLITS[name](self, max_history=max_history)

    def __repr__(self) -> str:
        return (f"Interactions({self.name!r}, users={self.num_users}, items={self.num_items}, "
                f"interactions={self.num_interactions})")


def _factorize(values: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Codes 0..K-1 in order of first appearance, and the distinct values in that order."""
    distinct = list(dict.fromkeys(values))
    codes = {value: code for code, value in enumerate(distinct)}
    return np.fromiter(map(codes.__getitem__, values), dtype=np.int64, count=len(values)), distinct


def _reindex(codes: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str]]:
    """Renumber the codes still present to 0..K-1 in order of first appearance."""
    present, first = np.unique(codes, return_index=True)
    by_appearance = present[np.argsort(first)]
    mapping = np.empty(len(names), dtype=np.int64)
    mapping[by_appearance] = np.arange(len(by_appearance))
    return mapping[codes], [names[code] for code in by_appearance]


def _k_core(users: np.ndarray, items: np.ndarray, keep: np.ndarray, k: int) -> np.ndarray:
    """Mask of the rows that survive iteratively dropping users and items with fewer than ``k`` rows."""
    if k < 1:
        raise ValueError(f"k_core must be >= 1, got {k}")
    keep = keep.copy()
    while True:
        user_counts = np.bincount(users[keep], minlength=users.max() + 1)
        item_counts = np.bincount(items[keep], minlength=items.max() + 1)
        still = keep & (user_counts[users] >= k) & (item_counts[items] >= k)
        if np.array_equal(still, keep):
            return keep
        keep = still


def _group_by_user(users: np.ndarray, items: np.ndarray, timestamps: np.ndarray,
                   num_users: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-user item and timestamp arrays, sorted by timestamp; ties keep row order (stable sorts)."""
    order = np.argsort(timestamps, kind="stable")
    order = order[np.argsort(users[order], kind="stable")]
    bounds = np.cumsum(np.bincount(users, minlength=num_users))[:-1]
    return np.split(items[order], bounds), np.split(timestamps[order], bounds)
