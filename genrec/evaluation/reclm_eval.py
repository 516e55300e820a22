"""Evaluation of a title-writing recommender (:class:`~genrec.models.reclm.RecLM`) with RecLM-gen's metrics.

:func:`evaluate_answers` asks the model for ``list_length`` items for every row of an
:class:`~genrec.evaluation.Evaluator` (the same rows as every other genrec model), maps each
answer's entries to items and returns, side by side:

* the full-ranking metrics of the mapped list (Recall/NDCG/MRR@k by ``Evaluator.evaluate_ranked``;
  non-existent and repeated entries never hit; the list is as long as the answer, padded with -1);
* RecLM-gen's per-answer metrics averaged over rows (:mod:`genrec.evaluation.reclm_metrics`):
  ``NonExistRate``, ``RepeatRate``, ``InHistoryRate``, ``CorrectCount``, plus ``ExactNonExistRate``
  (entries that are not exactly a catalogue title, before any fuzzy mapping);
* with a teacher, the per-position reward summed over the answer (``RewardSum``) and the list
  reward (``ListReward``), the teacher's rank of an item being its 0-based position when the
  teacher scores every item after the history.

Entries map to items exactly (the model's title lookup), or through a ``matcher`` (e.g.
:class:`~genrec.evaluation.title_matcher.TitleMatcher`, RecAI's trigram TF-IDF; RecLM-gen maps
titles fuzzily too) when one is given.

:func:`evaluate_controls` runs RecLM-gen's control tasks (+category, -category, at least / exactly /
at most m of n, item count) on evaluation histories, decoded without list mode so that the model
chooses how many items to write, and reports ``TargetCategoryRate``, ``CategoryRateCorrect`` and
``CorrectCount`` per task.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from genrec.evaluation.reclm_metrics import answer_metrics, category_rate_correct, list_reward, mean_metrics, \
    position_rewards
from genrec.llm.reclm_tasks import draw_task

__all__ = ["CONTROL_TASKS", "evaluate_answers", "evaluate_controls", "teacher_ranks"]

CONTROL_TASKS = ("plus_category", "minus_category", "proportion", "item_count")


@torch.no_grad()
def teacher_ranks(teacher, histories: Sequence[np.ndarray]) -> torch.Tensor:
    """LongTensor [B, N + 1]: each item's 0-based rank when the teacher scores every item after each history."""
    scores = teacher.score([np.asarray(h, dtype=np.int64) for h in histories]).float().clone()
    scores[:, 0] = float("-inf")
    order = scores.argsort(dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1]).expand_as(order).contiguous())
    return ranks


def _map(model, answer: Sequence[int], matcher) -> tuple[list[int], list[int]]:
    """(mapped items, exactly matched items) of an answer's entries; -1 for no item."""
    entries = model.answer_entries(answer)
    exact = [model.entry_item(e) for e in entries]
    if matcher is None:
        return exact, exact
    mapped = [e if e > 0 else (matcher.match(text) or -1) for e, text in zip(exact, entries)]
    return mapped, exact


def evaluate_answers(model, evaluator, teacher=None, constrained: bool | None = None, matcher=None,
                     accelerator=None, exclude_history: bool = False) -> dict[str, float]:
    """Ranking metrics and RecLM-gen's answer metrics of ``model`` on ``evaluator``'s rows (module docstring).

    Args:
        model: a :class:`~genrec.models.reclm.RecLM` with its catalogue attached.
        evaluator: an :class:`~genrec.evaluation.Evaluator` (full protocol).
        teacher: a recommender with ``score`` for the reward (``None``: no reward).
        constrained: decode with the span constraint (default: the model's setting).
        matcher: maps an entry's text to an item index or ``None`` (default: exact titles only).
        accelerator: passed to ``evaluate_ranked``.
        exclude_history: constrained decoding never names an item of the row's history (then
            ``InHistoryRate`` is 0 by construction; like masking the history for a scoring model).
    """
    n = model.settings["list_length"]
    width = max(max(evaluator.ks), n)
    row_of = {id(history): row for row, history in enumerate(evaluator.histories)}
    per_answer = []

    def recommend(users, histories):
        _, answers = model.recommend_lists(histories, n, constrained, exclude_history)
        ranks = teacher_ranks(teacher, histories) if teacher is not None else None
        ranked = torch.full((len(histories), width), -1, dtype=torch.long)
        for b, (history, answer) in enumerate(zip(histories, answers)):
            target = int(evaluator.targets[row_of[id(history)]])
            items, exact = _map(model, answer, matcher)
            past = set(int(i) for i in history if i > 0)
            metrics = answer_metrics(items, n, past, target)
            metrics["ExactNonExistRate"] = float(sum(1 for i in exact[:n] if i < 0))
            if ranks is not None:
                rewards = position_rewards(items, n, past, target, lambda i, b=b: int(ranks[b, i]))
                metrics["RewardSum"] = float(sum(rewards))
                metrics["ListReward"] = list_reward(rewards, items, n, target)
            per_answer.append(metrics)
            kept = [i if i > 0 and i not in items[:j] else -1 for j, i in enumerate(items)][:width]
            ranked[b, : len(kept)] = torch.tensor(kept, dtype=torch.long)
        return ranked

    ranking = evaluator.evaluate_ranked(recommend, accelerator)
    answers = mean_metrics(per_answer)
    answers.pop("Recall", None), answers.pop("MRR", None), answers.pop("NDCG", None)  # @n: ranking has them @k
    return {**ranking, **answers}


def evaluate_controls(model, evaluator, categories: dict[str, set[int]], tasks: Sequence[str] = CONTROL_TASKS,
                      rows: int = 20, seed: int = 0, constrained: bool | None = None,
                      matcher=None) -> dict[str, float]:
    """RecLM-gen's control metrics on the first ``rows`` rows of ``evaluator``, per task.

    Returns:
        ``{"<task>.<metric>": mean}`` with ``CorrectCount``, ``NonExistRate``, ``RepeatRate`` and,
        for category tasks, ``TargetCategoryRate`` (items in the named category: higher is better for
        ``plus_category``, lower for ``minus_category``) and, for ``proportion``, ``CategoryRateCorrect``.
    """
    rng = np.random.default_rng(seed)
    n = model.settings["list_length"]
    out = {}
    for task in tasks:
        fields, instructions = [], []
        for row in range(min(rows, len(evaluator.histories))):
            target = int(evaluator.targets[row])
            field = draw_task(rng, [task], target, categories, n)
            if field["task"] != task:
                continue
            history = evaluator.histories[row]
            instructions.append(model.instruction(history, task, field["item_count"],
                                                  category=field.get("category", ""),
                                                  proportion=field.get("proportion", "exactly"),
                                                  m=field.get("category_count", 0)))
            fields.append({**field, "history": history, "target": target})
        if not fields:
            continue
        answers = model.generate_answers(instructions, constrained, item_count=None)
        per_answer = []
        for field, answer in zip(fields, answers):
            items, _ = _map(model, answer, matcher)
            members = categories.get(field.get("category", ""))
            metrics = answer_metrics(items, field["item_count"], set(int(i) for i in field["history"] if i > 0),
                                     field["target"], members)
            if task == "proportion":
                metrics["CategoryRateCorrect"] = category_rate_correct(
                    metrics["TargetCategoryRate"], metrics["NonExistRate"], field["proportion"],
                    field["category_count"])
            per_answer.append(metrics)
        out.update({f"{task}.{key}": value for key, value in mean_metrics(per_answer).items()})
        out[f"{task}.count"] = float(len(per_answer))
    return out
