"""Evaluation protocols: full ranking over the catalogue, or sampled (target + negatives).

An :class:`Evaluator` holds one split's evaluation set (``users`` [B], ``histories`` (B arrays),
``targets`` [B]) and turns a model into metrics. The model is either a score function over every
item (``score_fn(users, histories) -> [b, N + 1]``, used by both protocols) or, for generative
models, a recommender that returns ranked item ids (``recommend_fn(users, histories) -> [b, K]``,
full protocol only). Under ``accelerate`` with several processes, each process ranks the rows
``rank::world`` and the ranks are gathered, so every process returns the same metrics, computed
over every row exactly once.

Shapes: B rows, b rows in a batch, N items (indices 1..N, 0 is padding), K list length.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from genrec.evaluation.metrics import KS, compute_metrics, ranks_from_ranked_lists, ranks_from_scores
from genrec.progress import progress

ScoreFn = Callable[[np.ndarray, list[np.ndarray]], torch.Tensor]
RecommendFn = Callable[[np.ndarray, list[np.ndarray]], torch.Tensor]

PROTOCOLS = ("full", "sampled")

_MAX_DRAWS = 1 << 22  # int64 draws per rejection-sampling round (32 MiB)


def sample_negatives(
    num_items: int,
    histories: Sequence[np.ndarray],
    targets: np.ndarray,
    num_negatives: int = 100,
    seed: int = 0,
) -> np.ndarray:
    """Draws each row's negatives uniformly without replacement from the items it never saw.

    A row's eligible items are 1..N minus its history and its target, so a negative is never an
    item the user interacted with before the target, nor the target itself. Rejection sampling in
    numpy rounds: draw uniformly from 1..N, drop forbidden items and repeats, keep the first
    ``num_negatives`` survivors of each row in draw order, which is a uniform sample without
    replacement. Deterministic for a given ``seed``.

    Args:
        num_items: N, the number of items (indices 1..N).
        histories: B int arrays, each row's items before the target (0 = padding is allowed).
        targets: int [B], target item of each row, in 1..N.
        num_negatives: negatives per row.
        seed: seed of the numpy generator.

    Returns:
        int64 [B, num_negatives], distinct eligible items per row, in random order.

    Raises:
        ValueError: on mismatched lengths, items outside 0..N, or a row with fewer than
            ``num_negatives`` eligible items (the message names the first such row).
    """
    targets = np.asarray(targets, dtype=np.int64)
    if len(histories) != len(targets):
        raise ValueError(f"got {len(histories)} histories for {len(targets)} targets")
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
    width = num_items + 1  # (row, item) -> row * width + item keys every pair by one int64
    forbidden = _forbidden_keys(num_items, histories, targets)
    eligible = num_items - np.bincount(forbidden // width, minlength=len(targets))
    short = np.flatnonzero(eligible < num_negatives)
    if short.size:
        row = int(short[0])
        raise ValueError(
            f"row {row} has only {int(eligible[row])} items outside its history and target, fewer "
            f"than num_negatives={num_negatives} ({short.size} such rows); lower num_negatives"
        )
    rng = np.random.default_rng(seed)
    negatives = np.zeros((len(targets), num_negatives), dtype=np.int64)
    counts = np.zeros(len(targets), dtype=np.int64)
    while (counts < num_negatives).any():
        rows = np.flatnonzero(counts < num_negatives)
        needed, available = num_negatives - counts[rows], eligible[rows] - counts[rows]
        keys = _draw_new_keys(rng, rows, num_items, forbidden, needed, available)
        key_rows = keys // width
        position = _position_in_run(key_rows)
        keep = position < num_negatives - counts[key_rows]
        keys, key_rows, position = keys[keep], key_rows[keep], position[keep]
        negatives[key_rows, counts[key_rows] + position] = keys % width
        counts += np.bincount(key_rows, minlength=len(targets))
        forbidden = np.sort(np.concatenate([forbidden, keys]))  # disjoint, so still unique
    return negatives


class Evaluator:
    """Ranks one evaluation set under a fixed protocol and reports :func:`compute_metrics`.

    Protocols:
        ``"full"``: the target is ranked among all N items (the default, as in RecBole and the
        TIGER / LC-Rec papers). ``"sampled"``: the target is ranked among itself and
        ``num_negatives`` negatives per row (see :func:`sample_negatives`), drawn once here so
        that every evaluation of a run sees the same candidates; kept for parity with papers that
        report it, although sampled metrics can reorder models (Krichene & Rendle, "On Sampled
        Metrics for Item Recommendation", KDD 2020).

    ``mask_history`` is False by default because RecBole does not mask history items for
    sequential models under full ranking (repeat consumption is a valid next item). With True,
    each row's history items are removed from its candidates; the target never is. Sampled
    negatives never include history items, so the flag only changes the full protocol.

    Ties are pessimistic (see :func:`ranks_from_scores`).

    Args:
        eval_set: any object with ``users`` [B], ``histories`` (B int arrays, time-ordered items
            before the target) and ``targets`` [B].
        num_items: N; scores have N + 1 columns.
        protocol: one of :data:`PROTOCOLS`.
        mask_history: remove history items from the candidates (full protocol).
        batch_size: rows per call of the model.
        generate_batch_size: rows per call of a ``recommend_fn`` (:meth:`evaluate_ranked`; a
            generative model decodes K beams per row, so its batches are smaller and its progress
            shows per batch); default: ``batch_size``.
        label: what the progress output calls this evaluation (``evaluating test``).
        num_negatives: negatives per row for the sampled protocol.
        seed: seed of the negative sampler.
        ks: cut-offs for the metrics.
    """

    def __init__(
        self,
        eval_set: Any,
        num_items: int,
        *,
        protocol: str = "full",
        mask_history: bool = False,
        batch_size: int = 256,
        num_negatives: int = 100,
        seed: int = 0,
        ks: Sequence[int] = KS,
        generate_batch_size: int | None = None,
        label: str = "evaluating",
    ):
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; valid protocols are {', '.join(PROTOCOLS)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if generate_batch_size is not None and generate_batch_size < 1:
            raise ValueError(f"generate_batch_size must be >= 1 or None, got {generate_batch_size}")
        self.users = np.asarray(eval_set.users)
        self.histories = [np.asarray(history, dtype=np.int64) for history in eval_set.histories]
        self.targets = np.asarray(eval_set.targets, dtype=np.int64)
        if not len(self.users) == len(self.histories) == len(self.targets):
            raise ValueError(
                f"eval_set has {len(self.users)} users, {len(self.histories)} histories and "
                f"{len(self.targets)} targets; they must be the same length"
            )
        if not len(self.targets):
            raise ValueError("eval_set is empty: there is nothing to evaluate")
        self.num_items = num_items
        self.protocol = protocol
        self.mask_history = mask_history
        self.batch_size = batch_size
        self.generate_batch_size = generate_batch_size or batch_size
        self.label = label
        self.ks = tuple(ks)
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"ks must be positive cut-offs, got {ks!r}")
        self.negatives = None
        if protocol == "sampled":
            self.negatives = sample_negatives(num_items, self.histories, self.targets, num_negatives, seed)

    def __len__(self) -> int:
        return len(self.targets)

    def __call__(self, score_fn: ScoreFn, accelerator=None) -> dict[str, float]:
        """Metrics of a score function over the whole evaluation set.

        Args:
            score_fn: ``(users [b], histories (b arrays)) -> scores [b, N + 1]``, column 0 ignored.
            accelerator: optional ``accelerate.Accelerator``; with several processes the rows are
                split between them and the ranks gathered.

        Returns:
            :func:`compute_metrics` of the ranks, identical on every process.
        """
        return compute_metrics(self.ranks(score_fn, accelerator), self.ks)

    def ranks(self, score_fn: ScoreFn, accelerator=None) -> np.ndarray:
        """0-based rank of each row's target under this protocol; int64 [B], in row order."""
        return self._collect_ranks(lambda rows: self._rank_scores(score_fn, rows), accelerator)

    def evaluate_ranked(self, recommend_fn: RecommendFn, accelerator=None) -> dict[str, float]:
        """Metrics of a recommender that returns ranked item ids (e.g. constrained beam search).

        A target absent from a row's list is a miss at every cut-off, so lists must be at least
        ``max(ks)`` long.

        Args:
            recommend_fn: ``(users [b], histories (b arrays)) -> item ids [b, K]``, best first.
            accelerator: as in :meth:`__call__`.

        Raises:
            ValueError: under the sampled protocol (a top-K list from the whole catalogue cannot
                rank the target among a row's sampled candidates), with ``mask_history`` (dropping
                history items from a top-K list would shorten it; exclude them while generating),
                or if a list is shorter than ``max(ks)``.
        """
        if self.protocol != "full":
            raise ValueError(
                "evaluate_ranked needs protocol='full': ranked item lists come from the whole "
                "catalogue and cannot rank the target among the sampled candidates; use a score "
                "function with the sampled protocol instead"
            )
        if self.mask_history:
            raise ValueError(
                "evaluate_ranked does not support mask_history=True: removing history items from a "
                "top-K list would leave fewer than K items; exclude them inside recommend_fn instead"
            )
        ranks = self._collect_ranks(lambda rows: self._rank_lists(recommend_fn, rows), accelerator,
                                    self.generate_batch_size)
        return compute_metrics(ranks, self.ks)

    def _rank_scores(self, score_fn: ScoreFn, rows: np.ndarray) -> torch.Tensor:
        return self._ranks_of(score_fn(self.users[rows], [self.histories[row] for row in rows]), rows)

    def _ranks_of(self, scores: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        """Ranks of the targets of ``rows`` under this protocol, given their scores [b, N + 1]."""
        if tuple(scores.shape) != (len(rows), self.num_items + 1):
            raise ValueError(
                f"score_fn must return scores of shape [batch, num_items + 1] = "
                f"[{len(rows)}, {self.num_items + 1}], got {tuple(scores.shape)}"
            )
        if self.negatives is not None:
            # Columns: padding 0 (ignored), the target, its negatives; so the target is "item" 1.
            padding = np.zeros(len(rows), dtype=np.int64)
            candidates = np.column_stack([padding, self.targets[rows], self.negatives[rows]])
            candidate_scores = scores.gather(1, torch.as_tensor(candidates, device=scores.device))
            return ranks_from_scores(candidate_scores, torch.ones(len(rows), dtype=torch.long))
        exclude = [self.histories[row] for row in rows] if self.mask_history else None
        return ranks_from_scores(scores, self.targets[rows], exclude)

    def _rank_lists(self, recommend_fn: RecommendFn, rows: np.ndarray) -> torch.Tensor:
        ranked = torch.as_tensor(recommend_fn(self.users[rows], [self.histories[row] for row in rows]))
        if ranked.ndim != 2 or ranked.shape[0] != len(rows):
            raise ValueError(
                f"recommend_fn must return item ids of shape [{len(rows)}, K], got {tuple(ranked.shape)}"
            )
        if ranked.shape[1] < max(self.ks):
            raise ValueError(
                f"recommend_fn returned lists of {ranked.shape[1]} items but the metrics go up to "
                f"@{max(self.ks)}; return at least {max(self.ks)} items or pass smaller ks"
            )
        return ranks_from_ranked_lists(ranked, self.targets[rows])

    def _collect_ranks(self, rank_rows: Callable[[np.ndarray], torch.Tensor], accelerator,
                       batch_size: int | None = None) -> np.ndarray:
        """Ranks this process's rows in batches (default: ``batch_size``), then gathers every process's
        ranks in row order. Progress counts this process's rows, shown by the main process."""
        batch_size = batch_size or self.batch_size
        process, world = _process_layout(accelerator)
        rows = np.arange(process, len(self), world)
        is_main = accelerator is None or accelerator.is_main_process
        ranks = []
        with torch.inference_mode(), progress(total=len(rows), desc=self.label, unit="user", leave=False,
                                              disable=not is_main) as bar:
            for start in range(0, len(rows), batch_size):
                ranks.append(rank_rows(rows[start : start + batch_size]).cpu())
                bar.update(len(ranks[-1]))
        ranks = torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long)
        if world == 1:
            return ranks.numpy()
        return self._gather(torch.from_numpy(rows), ranks, accelerator)

    def _gather(self, rows: torch.Tensor, ranks: torch.Tensor, accelerator) -> np.ndarray:
        """Gathers (row, rank) pairs from every process and orders them by row.

        Processes hold ``ceil(B / world)`` or one fewer rows; the short ones pad with row -1 so
        that ``accelerator.gather`` sees equal shapes, and the padding is dropped afterwards.
        """
        per_process = -(-len(self) // accelerator.num_processes)
        columns = ranks[:, None] if ranks.ndim == 1 else ranks  # [b, 1] or [b, E] (see evaluate_together)
        pairs = torch.full((per_process, 1 + columns.shape[1]), -1, dtype=torch.long)
        pairs[: len(rows), 0] = rows
        pairs[: len(rows), 1:] = columns
        pairs = accelerator.gather(pairs.to(accelerator.device)).cpu()
        pairs = pairs[pairs[:, 0] >= 0]
        order = pairs[:, 0].argsort()
        if not torch.equal(pairs[order, 0], torch.arange(len(self))):
            raise RuntimeError(
                f"gathered ranks do not cover rows 0..{len(self) - 1} exactly once; every process "
                "must evaluate the same evaluation set"
            )
        ranked = pairs[order, 1:]
        return (ranked[:, 0] if ranks.ndim == 1 else ranked).numpy()


def evaluate_together(evaluators: Mapping[str, Evaluator], score_fn: ScoreFn,
                      accelerator=None) -> dict[str, dict[str, float]]:
    """Metrics of one score function under several evaluators of the same rows, scoring each batch once.

    For reporting one model under several protocols side by side (e.g. ``full`` and ``sampled``)
    without running the model twice: each batch of rows is scored once and ranked by every
    evaluator. The evaluators must hold the same rows (users, targets, history lengths) and batch
    size; the results equal calling each evaluator on its own.

    Args:
        evaluators: name -> :class:`Evaluator`; at least one.
        score_fn: as in :meth:`Evaluator.__call__`.
        accelerator: as in :meth:`Evaluator.__call__`.

    Returns:
        name -> :func:`compute_metrics` of that evaluator's ranks (with its own ``ks``).
    """
    if not evaluators:
        raise ValueError("evaluate_together needs at least one evaluator")
    names, group = list(evaluators), list(evaluators.values())
    first = group[0]
    for name, other in zip(names[1:], group[1:]):
        same = (len(other) == len(first) and other.batch_size == first.batch_size
                and np.array_equal(other.users, first.users) and np.array_equal(other.targets, first.targets)
                and all(len(a) == len(b) for a, b in zip(other.histories, first.histories)))
        if not same:
            raise ValueError(f"evaluator {name!r} does not hold the same rows and batch size as {names[0]!r}; "
                             "evaluate_together needs evaluators built from one evaluation set")

    def rank_rows(rows: np.ndarray) -> torch.Tensor:
        scores = score_fn(first.users[rows], [first.histories[row] for row in rows])
        return torch.stack([evaluator._ranks_of(scores, rows) for evaluator in group], dim=1)  # [b, E]

    ranks = first._collect_ranks(rank_rows, accelerator)
    return {name: compute_metrics(ranks[:, e], evaluator.ks) for e, (name, evaluator) in enumerate(evaluators.items())}


def _process_layout(accelerator) -> tuple[int, int]:
    """(this process's index, number of processes); (0, 1) without an accelerator."""
    if accelerator is None:
        return 0, 1
    return accelerator.process_index, accelerator.num_processes


def _forbidden_keys(num_items: int, histories: Sequence[np.ndarray], targets: np.ndarray) -> np.ndarray:
    """Sorted unique ``row * (N + 1) + item`` keys of each row's history and target (items >= 1)."""
    items = [np.asarray(history, dtype=np.int64).reshape(-1) for history in histories]
    lengths = [len(history) for history in items]
    items = np.concatenate([*items, targets])
    rows = np.concatenate([np.repeat(np.arange(len(targets)), lengths), np.arange(len(targets))])
    if items.size and (items.min() < 0 or items.max() > num_items):
        raise ValueError(
            f"history and target items must be in 0..{num_items}, got values in {items.min()}..{items.max()}"
        )
    keys = np.sort(rows * (num_items + 1) + items)
    return keys[_starts_of_runs(keys) & (keys % (num_items + 1) > 0)]


def _draw_new_keys(
    rng: np.random.Generator,
    rows: np.ndarray,
    num_items: int,
    forbidden: np.ndarray,
    needed: np.ndarray,
    available: np.ndarray,
) -> np.ndarray:
    """One rejection-sampling round: distinct allowed (row, item) keys, grouped by row, in draw order.

    Each row draws twice the number of items expected to yield the slowest row's need
    (``needed`` new items out of ``available`` still allowed), capped at ``_MAX_DRAWS`` in all.
    """
    expected = np.ceil(2 * needed * num_items / available).max()
    draws_per_row = int(max(1, min(expected, _MAX_DRAWS // len(rows))))
    items = rng.integers(1, num_items + 1, size=(len(rows), draws_per_row))
    keys = (rows[:, None] * (num_items + 1) + items).reshape(-1)
    keys = keys[~_contains(forbidden, keys)]
    order = np.argsort(keys, kind="stable")
    first_of_each = order[_starts_of_runs(keys[order])]
    return keys[np.sort(first_of_each)]


def _contains(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Boolean mask of ``keys`` found in the sorted unique array ``sorted_keys``."""
    if not sorted_keys.size:
        return np.zeros(keys.shape, dtype=bool)
    positions = np.searchsorted(sorted_keys, keys).clip(max=len(sorted_keys) - 1)
    return sorted_keys[positions] == keys


def _starts_of_runs(values: np.ndarray) -> np.ndarray:
    """Boolean mask of the first element of each run of equal consecutive values.

    On sorted input this selects unique values, without ``np.unique``'s hash table, which is
    slower here.
    """
    return np.r_[True, values[1:] != values[:-1]][: values.size]


def _position_in_run(values: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within each run of equal consecutive values."""
    starts = np.flatnonzero(_starts_of_runs(values))
    return np.arange(values.size) - np.repeat(starts, np.diff(np.r_[starts, values.size]))
