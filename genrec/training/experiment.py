"""The data side of a run, shared by every trainer: dataset, split and evaluators.

Every trainer calls :func:`experiment` with no arguments; gin binds what differs from the defaults::

    experiment.dataset = "ml-100k"
    experiment.protocol = "full"        # or "sampled" (1 positive + 100 sampled negatives)
    experiment.extra_protocols = ["sampled"]   # also report these, side by side (score-based models)

``--split NAME`` on the command line binds ``experiment.split``. The returned :class:`Experiment`
holds the loaded data, the split, one evaluator per evaluation set, and the ``info`` that
``metrics.json`` records (dataset, split, protocol, fingerprint, masking).

Extra protocols: with ``experiment.extra_protocols = ["sampled"]``, the evaluate function that
:meth:`Experiment.evaluate_scores` builds scores each batch once and ranks it under the main protocol
and every extra one (:func:`genrec.evaluation.evaluate_together`), so ``metrics.json`` holds both
side by side: ``test.ndcg@10`` (main) and ``test.sampled.hit@10``, ``test.sampled.ndcg@10`` ...
(nested under the protocol's name). A sampled block names Recall@K ``hit@k``: with one target among
1 + 100 candidates it is the Hit Ratio that papers using that protocol report. Model selection
(``fit.metric``) stays on the main protocol.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import gin
import numpy as np
import torch

from genrec import assets
from genrec.data import ItemCatalog, Interactions, Split, load_dataset
from genrec.data.mind_small import (IMPRESSION_SPLIT, ImpressionSet, impression_split, mind_folder, read_mind_small,
                                    train_interactions)
from genrec.data.splits import EvalSet
from genrec.evaluation import Evaluator, evaluate_together, list_health
from genrec.evaluation.impression_protocol import ImpressionEvaluator
from genrec.evaluation.protocols import PROTOCOLS

__all__ = ["Experiment", "experiment"]

ScoreFn = Callable[[np.ndarray, list[np.ndarray]], torch.Tensor]


@dataclass
class Experiment:
    """Loaded data, its split and the evaluators for ``valid`` and ``test``.

    ``extra_evaluators`` maps each extra protocol to its ``valid`` and ``test`` evaluators (same rows).
    Under MIND's impressions split, ``split`` is None, ``impressions`` holds the training impressions
    and the evaluators are :class:`ImpressionEvaluator`.
    """

    interactions: Interactions
    catalog: ItemCatalog
    split: Split | None
    evaluators: dict[str, Evaluator | ImpressionEvaluator]
    info: dict[str, Any] = field(default_factory=dict)
    extra_evaluators: dict[str, dict[str, Evaluator]] = field(default_factory=dict)
    impressions: ImpressionSet | None = None

    @property
    def num_items(self) -> int:
        return self.interactions.num_items

    def evaluate_model(self):
        """The ``evaluate(model, which, accelerator)`` callable of :func:`genrec.training.fit` for any
        :class:`~genrec.models.base.Recommender`.

        A scoring model is ranked by ``model.score(histories, users)`` (as float32) under the main
        protocol and every extra one (:meth:`evaluate_scores`). A generative model (``generative =
        True``) is ranked by its lists ``model.recommend_indices(histories, k=max(ks), users=users)``
        under the full protocol, and its metrics gain ``valid_item_rate`` and ``duplicate_rate``
        (:func:`genrec.evaluation.list_health`, averaged over processes).
        """
        score_evaluate = self.evaluate_scores(lambda model, users, histories: model.score(histories, users).float())

        def evaluate(model, which, accelerator):
            if isinstance(self.evaluators[which], ImpressionEvaluator):
                return self.evaluators[which](model.score_candidates, accelerator)
            if not getattr(model, "generative", False):
                return score_evaluate(model, which, accelerator)
            evaluator, lists = self.evaluators[which], []

            def recommend(users, histories):
                items, _ = model.recommend_indices(histories, k=max(evaluator.ks), users=users)
                lists.append(items.cpu())
                return items

            metrics = evaluator.evaluate_ranked(recommend, accelerator)
            health = list_health(lists)
            if accelerator is not None and accelerator.num_processes > 1:
                values = torch.tensor(list(health.values()), device=accelerator.device)
                health = dict(zip(health, accelerator.reduce(values, "mean").tolist()))
            return {**metrics, **health}

        return evaluate

    def evaluate_scores(self, score: Callable[[torch.nn.Module, np.ndarray, list[np.ndarray]], torch.Tensor]):
        """An ``evaluate(model, which, accelerator)`` callable for the training loop.

        Args:
            score: ``score(model, users, histories) -> [b, N+1]`` scores of every item.

        Returns:
            ``evaluate`` whose metrics are the main protocol's, plus one nested dict per extra
            protocol (see the module docstring).
        """
        def evaluate(model, which, accelerator):
            score_fn = lambda users, histories: score(model, users, histories)  # noqa: E731
            if not self.extra_evaluators:
                return self.evaluators[which](score_fn, accelerator)
            group = {"": self.evaluators[which], **{name: evaluators[which]
                                                    for name, evaluators in self.extra_evaluators.items()}}
            results = evaluate_together(group, score_fn, accelerator)
            metrics = results.pop("")
            for name, extra in results.items():
                metrics[name] = _protocol_names(name, extra)
            return metrics

        return evaluate


@gin.configurable(denylist=["scores_impressions"])
def experiment(
    dataset: str = "ml-100k",
    split: str = "loo",
    min_rating: float | None = None,
    k_core: int | None = None,
    max_history: int | None = None,
    protocol: str = "full",
    mask_history: bool = False,
    eval_batch_size: int = 256,
    generate_batch_size: int = 32,
    num_negatives: int = 100,
    negatives_seed: int = 0,
    eval_rows: int | None = None,
    extra_protocols: Sequence[str] = (),
    item_text: str = "original",
    missing_descriptions: str = "error",
    scores_impressions: bool = False,
) -> Experiment:
    """Loads a dataset, splits it and builds the evaluators.

    Args:
        dataset: a name known to :func:`genrec.data.load_dataset` (``ml-100k``, ``ml-1m``,
            ``mind:<folder>``, ...).
        split: ``loo`` (leave-one-out by time: valid = second-last, test = last) or another name in
            ``genrec.data.SPLITS``; or ``impressions`` for ``mind:<folder>`` (module docstring).
        min_rating: keep interactions rated at least this (``None``: keep all, as RecBole does).
        k_core: iteratively keep users and items with at least this many interactions.
        max_history: most recent items kept in evaluation histories (``None``: all).
        protocol: ``full`` ranks the target among all items; ``sampled`` among 1 + ``num_negatives``.
        mask_history: remove each user's history items from the candidates. Off by default: RecBole
            does not mask them for sequential models under full ranking, and a re-consumed item is
            a legitimate target.
        eval_batch_size: users per evaluation batch.
        generate_batch_size: users per batch of a generative model's evaluation (LC-Rec, TIGER):
            each user holds K beams, and progress is shown per batch.
        num_negatives: sampled negatives per user for the ``sampled`` protocol.
        negatives_seed: seed of the sampled negatives (fixed so every model sees the same ones).
        eval_rows: evaluate valid and test on a fixed random sample of this many rows each (seeded
            by ``negatives_seed``; ``metrics.json`` records it); ``None``: every row. For models
            whose evaluation is costly (LC-Rec's beam search on a CPU) in debug runs; numbers from a
            sample are not comparable with full-set numbers.
        extra_protocols: protocols also reported, side by side with ``protocol``, by
            :meth:`Experiment.evaluate_scores` (e.g. ``["sampled"]``); the same rows, negatives and
            masking. Models evaluated from ranked lists (``evaluate_ranked``) ignore them.
        item_text: ``"original"`` or ``"augmented[:<cache path>]"`` (see the module docstring).
        missing_descriptions: ``"error"`` (every item needs a description) or ``"empty"`` (items
            without one keep their original text), for ``item_text = "augmented..."``.
        scores_impressions: set by a trainer (not gin) whose model has ``score_candidates``: it
            accepts ``split = "impressions"``.
    """
    _check_settings(min_rating=min_rating, k_core=k_core, max_history=max_history, eval_batch_size=eval_batch_size,
                    generate_batch_size=generate_batch_size, num_negatives=num_negatives,
                    negatives_seed=negatives_seed, eval_rows=eval_rows)
    extra_protocols = list(extra_protocols)
    for name in extra_protocols:
        if name not in PROTOCOLS or name == protocol or extra_protocols.count(name) > 1:
            raise ValueError(f"experiment.extra_protocols = {extra_protocols!r}: each must be one of "
                             f"{', '.join(PROTOCOLS)}, listed once, other than experiment.protocol ({protocol!r})")
    if split == IMPRESSION_SPLIT:
        return _impression_experiment(dataset, scores_impressions, max_history, eval_rows, negatives_seed,
                                      eval_batch_size, item_text, missing_descriptions,
                                      min_rating=min_rating, k_core=k_core, protocol=protocol,
                                      mask_history=mask_history, extra_protocols=extra_protocols)
    interactions, catalog = load_dataset(dataset, min_rating=min_rating, k_core=k_core)
    catalog, text_info = _item_text(catalog, item_text, missing_descriptions, dataset)
    data_split = interactions.split(split, max_history=max_history)
    rows = {which: _sample_rows(getattr(data_split, which), eval_rows, negatives_seed) for which in ("valid", "test")}

    def evaluators_for(name: str) -> dict[str, Evaluator]:
        return {which: Evaluator(rows[which], interactions.num_items, protocol=name, mask_history=mask_history,
                                 batch_size=eval_batch_size, num_negatives=num_negatives, seed=negatives_seed,
                                 generate_batch_size=generate_batch_size, label=f"evaluating {which}")
                for which in ("valid", "test")}

    evaluators = evaluators_for(protocol)
    extra_evaluators = {name: evaluators_for(name) for name in extra_protocols}
    info = {"dataset": dataset, "split": split, "protocol": protocol, "mask_history": mask_history,
            "fingerprint": interactions.fingerprint(), "num_users": interactions.num_users,
            "num_items": interactions.num_items}
    info.update(text_info)
    if extra_protocols:
        info["extra_protocols"] = extra_protocols
    if eval_rows is not None:
        info["eval_rows"] = {which: len(evaluator) for which, evaluator in evaluators.items()}
    return Experiment(interactions, catalog, data_split, evaluators, info, extra_evaluators)


def _impression_experiment(dataset: str, scores_impressions: bool, max_history: int | None, eval_rows: int | None,
                           seed: int, batch_size: int, item_text: str, missing_descriptions: str,
                           **unused) -> Experiment:
    """The MIND impressions experiment (module docstring); settings that cannot apply are errors."""
    scheme, _, argument = dataset.partition(":")
    if scheme != "mind" or not argument:
        raise ValueError(f"experiment.split = {IMPRESSION_SPLIT!r} is MIND's per-impression protocol; it needs "
                         f"experiment.dataset = 'mind:<folder>', got {dataset!r}")
    if not scores_impressions:
        raise ValueError(f"experiment.split = {IMPRESSION_SPLIT!r} scores the candidates of each impression, which "
                         "only the content trainer does; use experiment.split = 'loo' (MIND's click sequences) here")
    defaults = {"min_rating": None, "k_core": None, "protocol": "full", "mask_history": False, "extra_protocols": []}
    for name, value in unused.items():
        if value != defaults[name]:
            raise ValueError(f"experiment.{name} = {value!r} does not apply to experiment.split = "
                             f"{IMPRESSION_SPLIT!r} (every impression's own candidates are scored); remove it")
    mind = read_mind_small(mind_folder(argument, assets.data_dir()))
    catalog, text_info = _item_text(mind.news.catalog, item_text, missing_descriptions, dataset)
    train, valid, test = impression_split(mind, max_history)
    rows = {}
    for which, part in (("valid", valid), ("test", test)):
        keep = np.arange(len(part))
        if eval_rows is not None and eval_rows < len(part):
            keep = np.sort(np.random.default_rng(seed).choice(len(part), eval_rows, replace=False))
        rows[which] = part.subset(keep)
    evaluators = {which: ImpressionEvaluator(part, batch_size=batch_size, label=f"evaluating {which}")
                  for which, part in rows.items()}
    interactions = train_interactions(mind, train)
    info = {"dataset": dataset, "split": IMPRESSION_SPLIT, "protocol": "impressions", "mask_history": False,
            "fingerprint": mind.fingerprint(), "num_users": interactions.num_users, "num_items": mind.news.num_news,
            "impressions": {"train": len(train), "valid": len(rows["valid"]), "test": len(rows["test"])},
            **text_info}
    if eval_rows is not None:
        info["eval_rows"] = {which: len(part) for which, part in rows.items()}
    return Experiment(interactions, catalog, None, evaluators, info, impressions=train)


def _item_text(catalog: ItemCatalog, item_text: str, missing: str, dataset: str) -> tuple[ItemCatalog, dict]:
    """The catalogue with the item text ``experiment.item_text`` names, and what ``info`` records of it."""
    if missing not in ("error", "empty"):
        raise ValueError(f"experiment.missing_descriptions = {missing!r} cannot work; use 'error' or 'empty'")
    if item_text == "original":
        return catalog, {}
    kind, _, path = item_text.partition(":")
    if kind != "augmented":
        raise ValueError(f"experiment.item_text = {item_text!r} cannot work; use 'original', 'augmented' (the "
                         "default description cache of the dataset) or 'augmented:<cache path>'")
    from genrec import augment  # the LLM side is imported only when descriptions are asked for

    path = Path(path).expanduser() if path else augment.cache_path(dataset)
    if not path.is_file():
        raise FileNotFoundError(f"experiment.item_text = {item_text!r}: the description cache {path} does not exist; "
                                f"write it with python -m genrec.augment --dataset {dataset} (or name another file: "
                                "experiment.item_text = 'augmented:<path>')")
    try:
        described = augment.with_descriptions(catalog, path, require_all=missing == "error")
    except augment.AugmentError as error:
        raise ValueError(f"experiment.item_text = {item_text!r}: {error} (or set experiment.missing_descriptions = "
                         "'empty')") from None
    count = sum(bool(text) for text in described.fields["description"][1:])
    return described, {"item_text": item_text, "descriptions": str(path), "items_described": count}


def _protocol_names(protocol: str, metrics: dict[str, float]) -> dict[str, float]:
    """An extra protocol's metrics as reported: a sampled block calls Recall@K (one target) ``hit@k``."""
    if protocol != "sampled":
        return metrics
    return {("hit@" + key[len("recall@"):] if key.startswith("recall@") else key): value
            for key, value in metrics.items()}


def _sample_rows(eval_set: EvalSet, rows: int | None, seed: int) -> EvalSet:
    """``eval_set`` itself, or a fixed random sample of ``rows`` of its rows (in their original order)."""
    if rows is None or rows >= len(eval_set):
        return eval_set
    if rows < 1:
        raise ValueError(f"experiment.eval_rows must be >= 1 or None, got {rows}")
    keep = np.sort(np.random.default_rng(seed).choice(len(eval_set), rows, replace=False))
    return EvalSet(eval_set.users[keep], [eval_set.histories[i] for i in keep], eval_set.targets[keep])


_OPTIONAL = {"min_rating", "k_core", "max_history", "eval_rows"}


def _check_settings(**settings) -> None:
    """Raises ValueError naming the ``experiment.*`` binding whose value cannot work: ``min_rating`` a
    finite number, ``negatives_seed`` an int >= 0, every other one an int >= 1 (the optional ones or None)."""
    for name, value in settings.items():
        if value is None and name in _OPTIONAL:
            continue
        if name == "min_rating":
            good = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            need = "a finite number"
        else:
            low = 0 if name == "negatives_seed" else 1
            good, need = isinstance(value, int) and not isinstance(value, bool) and value >= low, f"an int >= {low}"
        if not good:
            optional = ", or None" if name in _OPTIONAL else ""
            raise ValueError(f"experiment.{name} = {value!r} cannot work; it must be {need}{optional}")
