"""Train / valid / test splits of time-ordered user sequences.

Both splits cut every user's sequence chronologically (sequences are already time-ordered, ties
in file order), so no user's future leaks into their own training data. An evaluation row is
(user, history, target): the history is everything the user did before the target, truncated to
the ``max_history`` most recent items when set.

- ``loo`` (leave-one-out, the default; TIGER, LC-Rec, SASRec): for a sequence ``s`` of length n,
  train = ``s[:-2]``; valid: history ``s[:-2]``, target ``s[-2]``; test: history ``s[:-1]`` (the
  valid item included), target ``s[-1]``. One valid and one test row per user.
- ``ratio`` (per-user chronological 80/10/10): h = max(1, floor(0.1 * n)) held-out items each for
  valid and test, train = the first n - 2h; valid rows target each of the next h items and test
  rows each of the last h, every row with history = all items before its target. So n = 10 gives
  8/1/1, n = 25 gives 21/2/2, n = 3 gives 1/1/1.

Both need at least 3 interactions per user (each part non-empty); a shorter user is an error that
names the user and the fix, never a silent drop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

MIN_LENGTH = 3


class UserSequences(Protocol):
    """What a split reads: :class:`genrec.data.Interactions` is one (this module does not import it).

    Attributes:
        name: dataset name, for messages.
        user_ids: raw user ids, for messages.
        sequences: per user index, the time-ordered item indices.
    """

    name: str
    user_ids: Sequence[str]
    sequences: Sequence[np.ndarray]


@dataclass
class EvalSet:
    """Evaluation rows: predict ``targets[b]`` for ``users[b]`` from ``histories[b]``.

    Attributes:
        users: [B] user indices (a user may have several rows in the ``ratio`` split).
        histories: [B] time-ordered item indices known before the target.
        targets: [B] target item indices.
    """

    users: np.ndarray
    histories: list[np.ndarray]
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)


@dataclass
class Split:
    """A train / valid / test split.

    Attributes:
        name: Split name (a key of :data:`SPLITS`).
        train: Per user index, the training sequence.
        valid: Rows for model selection.
        test: Rows reported once.
    """

    name: str
    train: list[np.ndarray]
    valid: EvalSet
    test: EvalSet


def leave_one_out(interactions: UserSequences, max_history: int | None = None) -> Split:
    """Last item = test, second-last = valid, the rest = train (see the module docstring)."""
    _check(interactions, "loo", max_history)
    sequences = interactions.sequences
    users = np.arange(len(sequences), dtype=np.int64)
    valid = _eval_set(users, [(sequence, len(sequence) - 2) for sequence in sequences], max_history)
    test = _eval_set(users, [(sequence, len(sequence) - 1) for sequence in sequences], max_history)
    return Split("loo", [sequence[:-2] for sequence in sequences], valid, test)


def ratio_split(interactions: UserSequences, max_history: int | None = None) -> Split:
    """Per-user chronological 80/10/10 with h = max(1, floor(0.1 n)) valid and test items each."""
    _check(interactions, "ratio", max_history)
    train, valid_rows, test_rows, valid_users, test_users = [], [], [], [], []
    for user, sequence in enumerate(interactions.sequences):
        n = len(sequence)
        held_out = max(1, n // 10)
        train.append(sequence[: n - 2 * held_out])
        valid_rows += [(sequence, position) for position in range(n - 2 * held_out, n - held_out)]
        test_rows += [(sequence, position) for position in range(n - held_out, n)]
        valid_users += [user] * held_out
        test_users += [user] * held_out
    return Split("ratio", train,
                 _eval_set(np.array(valid_users, dtype=np.int64), valid_rows, max_history),
                 _eval_set(np.array(test_users, dtype=np.int64), test_rows, max_history))


SPLITS: dict[str, Callable[..., Split]] = {"loo": leave_one_out, "ratio": ratio_split}


def _eval_set(users: np.ndarray, rows: list[tuple[np.ndarray, int]], max_history: int | None) -> EvalSet:
    """Rows (sequence, target position) -> EvalSet with history = sequence before the target."""
    histories = [sequence[_history_start(position, max_history):position] for sequence, position in rows]
    targets = np.array([sequence[position] for sequence, position in rows], dtype=np.int64)
    return EvalSet(users, histories, targets)


def _history_start(position: int, max_history: int | None) -> int:
    return 0 if max_history is None else max(0, position - max_history)


def _check(interactions: UserSequences, split: str, max_history: int | None) -> None:
    if max_history is not None and max_history < 1:
        raise ValueError(f"max_history must be a positive number of items or None, got {max_history}")
    lengths = np.array([len(sequence) for sequence in interactions.sequences])
    short = np.flatnonzero(lengths < MIN_LENGTH)
    if len(short):
        user = short[0]
        raise ValueError(
            f"user {interactions.user_ids[user]!r} of dataset {interactions.name} has {lengths[user]} "
            f"interaction(s) but the {split!r} split needs at least {MIN_LENGTH} (train, valid, test); "
            f"{len(short)} user(s) are that short: use k_core=3 or drop such users")
