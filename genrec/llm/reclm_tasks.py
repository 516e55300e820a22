"""RecLM-gen's supervised tasks: an LLM answers recommendation and control instructions with titles.

RecLM-gen (Lu et al., ACL 2024, arXiv 2403.05063; RecAI) fine-tunes a chat LLM to answer with a
list of item titles. Its labels are distilled from a teacher: the ground-truth next item followed
by the teacher recommender's top items (filtered for control tasks). The families kept here:

* ``sequential``: history titles -> ``n`` items (``n`` = ``list_length``);
* ``item_count``: the same with a random ``n`` in 1..``list_length`` ("exactly n items");
* ``plus_category`` / ``minus_category``: ``n`` items of / not of a category (a genre the target
  has / lacks, so the target stays a valid answer);
* ``proportion``: ``n`` items, at least / exactly / at most ``m`` of them in a category (the label
  takes exactly ``m`` from the category, which meets all three).

Histories are random windows of each user's **training** sequence (a window ends before a training
item, the target); at most ``max_history`` titles. Labels: the target first, then the teacher's
ranking without history items, the target and (for control tasks) items outside the constraint.

The teacher is any :class:`~genrec.models.base.Recommender` with ``score`` (e.g. a trained genrec
SASRec, or :class:`~genrec.models.popularity.MostPopular` as the documented fall-back).

An answer is rendered as one item per line; with span tokens each line is ``<SOI>title<EOI>``
(RecLM-cgen's format), otherwise the bare title. Examples are tokenised once when built and served
packed (:func:`genrec.llm.finetune.pack_examples`), as :class:`~genrec.llm.tasks.TaskData` does.

Shapes: B batch, N items.
"""

from __future__ import annotations

from collections.abc import Sequence

import gin
import numpy as np
import torch
from torch.utils.data import Dataset

from genrec.llm.finetune import batch_examples
from genrec.llm.tasks import PromptFormat

__all__ = ["RECLM_TASKS", "RecLMData", "category_items", "draw_task", "reclm_instruction", "render_answer",
           "teacher_rankings"]

RECLM_TASKS = ("sequential", "item_count", "plus_category", "minus_category", "proportion")
PROPORTION_WORDS = {"at_least": "at least", "exactly": "exactly", "at_most": "at most"}

_HISTORY = "Here are the {noun}s a user watched, oldest first: {history}."
_REQUESTS = {
    "sequential": " Recommend {n} {noun}s the user is likely to watch next, one per line.",
    "item_count": " Recommend exactly {n} {noun}s the user is likely to watch next, one per line.",
    "plus_category": " Recommend {n} {category} {noun}s the user is likely to watch next, one per line.",
    "minus_category": " Recommend {n} {noun}s that are not {category} {noun}s, one per line.",
    "proportion": " Recommend {n} {noun}s, {proportion} {m} of them {category} {noun}s, one per line.",
}


def reclm_instruction(history_titles: Sequence[str], task: str = "sequential", n: int = 10, noun: str = "item",
                      category: str = "", proportion: str = "exactly", m: int = 0) -> str:
    """The instruction text of a task (history shown as plain titles)."""
    if task not in _REQUESTS:
        raise ValueError(f"unknown RecLM task {task!r}; choose from {', '.join(RECLM_TASKS)}")
    request = _REQUESTS[task].format(n=n, noun=noun, category=category, m=m,
                                     proportion=PROPORTION_WORDS.get(proportion, proportion))
    return _HISTORY.format(noun=noun, history="; ".join(history_titles)) + request


def render_answer(items: Sequence[int], titles: Sequence[str], span_tokens: bool) -> str:
    """One item per line, each ``<SOI>title<EOI>`` with span tokens, else the bare title."""
    from genrec.decoding.title_trie import EOI, SOI

    return "\n".join(f"{SOI}{titles[i]}{EOI}" if span_tokens else titles[i] for i in items)


def category_items(genres: Sequence[str]) -> dict[str, set[int]]:
    """Category name -> item indices, from a comma-separated genre field per item index (0 unused)."""
    out: dict[str, set[int]] = {}
    for item, value in enumerate(genres):
        if item == 0:
            continue
        for name in (g.strip() for g in str(value).split(",")):
            if name and name.lower() != "unknown":
                out.setdefault(name, set()).add(item)
    return out


def draw_task(rng: np.random.Generator, tasks: Sequence[str], target: int, categories: dict[str, set[int]],
              list_length: int) -> dict:
    """A random task for a target item: ``{"task", "item_count"}`` plus ``category`` for category tasks and
    ``proportion``, ``category_count`` for ``proportion``. A category task whose target has no
    usable category (no genre, or every genre for ``minus_category``) becomes ``sequential``."""
    task = tasks[int(rng.integers(len(tasks)))]
    n = int(rng.integers(1, list_length + 1)) if task == "item_count" else list_length
    field = {"task": task, "item_count": n}
    if task in ("sequential", "item_count"):
        return field
    have = sorted(name for name, items in categories.items() if target in items)
    lack = sorted(name for name, items in categories.items() if target not in items)
    pool = lack if task == "minus_category" else have
    if not pool:
        return {"task": "sequential", "item_count": list_length}
    field["category"] = pool[int(rng.integers(len(pool)))]
    if task == "proportion":
        field["proportion"] = list(PROPORTION_WORDS)[int(rng.integers(3))]
        field["category_count"] = int(rng.integers(1, n + 1))
    return field


@torch.no_grad()
def teacher_rankings(teacher, histories: Sequence[np.ndarray], depth: int, batch_size: int = 256) -> np.ndarray:
    """int64 [B, depth]: the teacher's best items for each history, history items removed."""
    out = np.zeros((len(histories), depth), dtype=np.int64)
    for start in range(0, len(histories), batch_size):
        chunk = [np.asarray(h, dtype=np.int64) for h in histories[start:start + batch_size]]
        scores = teacher.score(chunk).float().clone()
        scores[:, 0] = float("-inf")
        for b, history in enumerate(chunk):
            scores[b, torch.as_tensor(history[history > 0])] = float("-inf")
        out[start:start + len(chunk)] = scores.topk(depth, dim=1).indices.cpu().numpy()
    return out


@gin.configurable(denylist=["train_sequences", "titles", "genres", "prompt_format", "teacher", "span_tokens"])
class RecLMData(Dataset):
    """RecLM-gen SFT examples with teacher-distilled labels (module docstring).

    Args:
        train_sequences: per user, time-ordered training items.
        titles: per item index, its title (:func:`genrec.decoding.title_trie.catalogue_titles`).
        genres: per item index, comma-separated categories (``""`` when the data has none: then
            only ``sequential`` and ``item_count`` are possible).
        prompt_format: renders and tokenises.
        teacher: a recommender with ``score(histories)`` (the label source after the target).
        span_tokens: wrap answer titles in ``<SOI>``/``<EOI>``.
        tasks: which of :data:`RECLM_TASKS`.
        num_examples: examples drawn (tasks uniformly; windows at random).
        list_length: n of ``sequential`` and control tasks; the largest n of ``item_count``.
        max_history: most recent titles in a prompt.
        teacher_depth: teacher items considered per example before filtering.
        noun: what an item is called in prompts (``movie`` for MovieLens).
        seed: seeds windows, tasks, categories and counts.
        packing, pack_tokens: padding-free packed batches (as :class:`~genrec.llm.tasks.TaskData`).
    """

    def __init__(self, train_sequences: Sequence[np.ndarray], titles: Sequence[str], genres: Sequence[str],
                 prompt_format: PromptFormat, teacher, span_tokens: bool = True, tasks: Sequence[str] = RECLM_TASKS,
                 num_examples: int = 2000, list_length: int = 10, max_history: int = 20, teacher_depth: int = 300,
                 noun: str = "item", seed: int = 0, packing: bool = True, pack_tokens: int | None = 512):
        unknown = [t for t in tasks if t not in RECLM_TASKS]
        if unknown or not tasks:
            raise ValueError(f"unknown or no RecLM tasks {list(tasks)!r}; choose from {', '.join(RECLM_TASKS)}")
        if list_length < 1 or max_history < 1 or num_examples < 1:
            raise ValueError("RecLMData list_length, max_history and num_examples must be >= 1")
        self.categories = category_items(genres)
        needs_category = [t for t in tasks if t.endswith("category") or t == "proportion"]
        if needs_category and not self.categories:
            raise ValueError(f"RecLM tasks {needs_category} need item categories, but the catalogue has no genres; "
                             "use tasks ['sequential', 'item_count']")
        self.titles, self.format, self.span_tokens = list(titles), prompt_format, span_tokens
        self.list_length, self.noun, self.packing, self.pack_tokens = list_length, noun, packing, pack_tokens
        rng = np.random.default_rng(seed)
        users = np.concatenate([np.full(max(len(s) - 1, 0), u) for u, s in enumerate(train_sequences)])
        ends = np.concatenate([np.arange(1, len(s)) for s in train_sequences if len(s) > 1])
        pick = rng.choice(len(ends), size=num_examples, replace=num_examples > len(ends))
        self.fields: list[dict] = []
        histories = []
        for u, e in zip(users[pick], ends[pick]):
            sequence = np.asarray(train_sequences[u])
            histories.append(sequence[max(0, e - max_history):e])
            self.fields.append({"user": int(u), "target": int(sequence[e])})
        ranked = teacher_rankings(teacher, histories, min(teacher_depth, len(self.titles) - 1))
        instructions, responses = [], []
        for field, history, teacher_items in zip(self.fields, histories, ranked):
            field["history"] = [int(i) for i in history]
            field.update(draw_task(rng, tasks, field["target"], self.categories, list_length))
            field["output"] = self._label(field, teacher_items)
            field["item_count"] = len(field["output"])  # fewer than asked when the constraint leaves fewer
            if field["task"] == "proportion":
                field["category_count"] = len(set(field["output"]) & self.categories[field["category"]])
            instructions.append(self.instruction(field))
            responses.append(render_answer(field["output"], self.titles, span_tokens))
        self.counts = {t: sum(f["task"] == t for f in self.fields) for t in tasks}
        self.examples = prompt_format.tokenize(instructions, responses)

    def _label(self, field: dict, teacher_items: np.ndarray) -> list[int]:
        target, n = field["target"], field["item_count"]
        rest = [int(i) for i in teacher_items if i != target and i not in field["history"]]
        if field["task"] in ("sequential", "item_count"):
            return [target] + rest[: n - 1]
        members = self.categories[field["category"]]
        inside = [i for i in rest if i in members]
        outside = [i for i in rest if i not in members]
        if field["task"] == "plus_category":
            return [target] + inside[: n - 1]
        if field["task"] == "minus_category":
            return [target] + outside[: n - 1]
        m = field["category_count"]
        chosen = set([target] + inside[: m - 1] + outside[: n - m])
        return [target] + [i for i in rest if i in chosen][: n - 1]

    def instruction(self, field: dict) -> str:
        """The instruction of one example's fields."""
        return reclm_instruction([self.titles[i] for i in field["history"]], field["task"], field["item_count"],
                                 self.noun, field.get("category", ""), field.get("proportion", "exactly"),
                                 field.get("category_count", 0))

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """A packed (or right-padded) batch with ``label_positions``."""
        examples = [self.examples[int(i)] for i in indices]
        return batch_examples(examples, self.format.tokenizer.pad_token_id, self.packing, self.pack_tokens)

    @staticmethod
    def collate(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch as ``__getitems__`` built it."""
        return batch

