"""RecLM-eval tasks: which users, what each prompt shows, and how a multiple-choice answer is read.

One :class:`LMExample` per (task, user), built from a dataset's leave-one-out split
(:func:`build_examples`); everything random is drawn from ``numpy.random.default_rng([seed, user])``,
so a user's example is the same whatever other users are evaluated. Titles are ``"Title (year)"``
(:func:`genrec.llm.tasks.item_title`), which keeps same-named items apart.

- ``retrieval``: the ``max_history`` most recent history titles (oldest first) -> the model names
  ``num_recommendations`` titles (RecAI: 10), one line, separated by ``<end>``.
- ``ranking``: the history and ``num_candidates`` candidates (RecAI: 20 = the target + 19 negatives
  drawn uniformly from the items the user never interacted with, or from the user's line of a RecAI
  folder's ``negative_samples.txt``), shuffled, each on its own line as ``<SOI>title<EOI>``; the
  model lists them best first, separated by ``<end>``.
- ``seq_ranking_mc``: the chronological history and ``num_choices`` options ``A``-``J`` (the next
  item + 9 negatives); the model answers one letter.
- ``cf_ranking_mc``: one random item of the user's history is held out and the rest shown in a
  random order ("not chronological"); the options are the held-out item + 9 negatives: which one
  belongs to this user's history?

The wording is genrec's (shorter than RecAI's protocol prompts, which are written for large chat
models); the formats (``<SOI>``/``<EOI>`` candidates, ``<end>`` separators, letters A-J) are RecAI's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from genrec.evaluation.title_matcher import TitleMatcher, normalize_title

__all__ = ["LETTERS", "TASKS", "LMExample", "UnknownTaskError", "build_examples", "check_task", "parse_choice",
           "pick_users"]

TASKS = ("retrieval", "ranking", "cf_ranking_mc", "seq_ranking_mc")
"""The tasks :func:`build_examples` knows."""

LETTERS = "ABCDEFGHIJ"

PROMPTS = {
    "retrieval": ("You are a recommender system. A user watched these {noun}s, oldest first:\n{history}\n\n"
                  "Recommend the {n} {noun}s the user is most likely to watch next, most likely first. Write only "
                  "their titles on one line, each title followed by <end>, like: Title1<end>Title2<end>"),
    "ranking": ("You are a recommender system. A user watched these {noun}s, oldest first:\n{history}\n\n"
                "Rank the {n} candidate {noun}s below by how likely the user is to watch each one next. "
                "Each candidate is written between <SOI> and <EOI>; their order is random.\n{candidates}\n\n"
                "Write all {n} candidate titles exactly as given, most likely first, on one line, each title "
                "followed by <end>, like: Title1<end>Title2<end>. Do not write anything else."),
    "seq_ranking_mc": ("You are a recommender system. A user watched these {noun}s, oldest first:\n{history}\n\n"
                       "Which {noun} will the user watch next?\n{candidates}\n\n"
                       "Answer with the letter of one option (A-J) only."),
    "cf_ranking_mc": ("You are a recommender system. A user watched these {noun}s (in no particular order):\n"
                      "{history}\n\nOne of the options below is another {noun} this user watched. Which one?\n"
                      "{candidates}\n\nAnswer with the letter of one option (A-J) only."),
}
"""Prompt templates per task; ``{history}``, ``{candidates}``, ``{n}`` and ``{noun}`` are filled in."""


class UnknownTaskError(ValueError):
    """A task name that :data:`TASKS` does not list."""


def check_task(task: str) -> str:
    """``task`` if it is one of :data:`TASKS`; raises :class:`UnknownTaskError` naming the known ones."""
    if task not in TASKS:
        raise UnknownTaskError(f"unknown RecLM-eval task {task!r}; known tasks: {', '.join(TASKS)}")
    return task


@dataclass
class LMExample:
    """One prompt of one task for one user.

    Attributes:
        task: one of :data:`TASKS`.
        user: user index (0..U-1).
        prompt: the instruction sent to the model (a chat template is applied by the backend).
        target: the item index the answer should name (for multiple choice: the right option).
        history: item indices shown as the history, in prompt order.
        candidates: item indices shown as candidates / options, in prompt order (``[]`` for
            retrieval).
        titles: the title of every shown item (history, candidates), by item index.
        num_recommendations: titles asked for (retrieval).
    """

    task: str
    user: int
    prompt: str
    target: int
    history: list[int]
    candidates: list[int] = field(default_factory=list)
    titles: dict[int, str] = field(default_factory=dict)
    num_recommendations: int = 0

    @property
    def answer_letter(self) -> str:
        """Letter of the right option (multiple choice only)."""
        return LETTERS[self.candidates.index(self.target)]


def pick_users(num_users_total: int, num_users: int | None = None, users: Sequence[int] | None = None,
               seed: int = 2020) -> list[int]:
    """The evaluated user indices: ``users`` as given, else ``num_users`` drawn without replacement
    with ``default_rng(seed)`` and sorted (``None``: every user).

    Raises:
        ValueError: a user index out of range, or ``num_users`` < 1.
    """
    if users is not None:
        users = [int(user) for user in users]
        bad = [user for user in users if not 0 <= user < num_users_total]
        if bad:
            raise ValueError(f"user indices {bad[:5]} are out of range 0..{num_users_total - 1}")
        return users
    if num_users is None or num_users >= num_users_total:
        return list(range(num_users_total))
    if num_users < 1:
        raise ValueError(f"num_users must be >= 1, got {num_users}")
    rng = np.random.default_rng(seed)
    return sorted(int(user) for user in rng.choice(num_users_total, size=num_users, replace=False))


def build_examples(task: str, sequences: Sequence[np.ndarray], titles: Sequence[str], users: Sequence[int],
                   seed: int = 2020, split: str = "test", max_history: int = 20, num_candidates: int = 20,
                   num_choices: int = 10, num_recommendations: int = 10, noun: str = "item",
                   negative_pools: Mapping[int, Sequence[int]] | None = None) -> list[LMExample]:
    """One :class:`LMExample` per user (see the module docstring).

    Args:
        task: one of :data:`TASKS`.
        sequences: per user index, the time-ordered item indices (``Interactions.sequences``).
        titles: ``titles[i]`` is item index i's title; ``titles[0]`` (padding) is unused.
        users: user indices to build examples for.
        seed: seed of negatives, shuffles and the ``cf_ranking_mc`` held-out item.
        split: ``"test"`` (target = last item, history = all before it) or ``"valid"`` (target = the
            second-last item), leave-one-out as :mod:`genrec.data.splits`.
        max_history: most recent history items shown.
        num_candidates: candidates of ``ranking`` (target included).
        num_choices: options of the multiple-choice tasks (2..10).
        num_recommendations: titles asked for in ``retrieval``.
        noun: what an item is, for the prompt (``"movie"``).
        negative_pools: per user index, the items to draw negatives from (RecAI's
            ``negative_samples.txt``; items the user interacted with are left out); users without a
            pool draw from every item they never interacted with.

    Raises:
        UnknownTaskError: an unknown task.
        ValueError: a bad count, or a user with too few interactions or too few unseen items to draw
            negatives from (the message names the user).
    """
    check_task(task)
    if split not in ("test", "valid"):
        raise ValueError(f"split must be 'test' or 'valid', got {split!r}")
    if not 2 <= num_choices <= len(LETTERS):
        raise ValueError(f"num_choices must be in 2..{len(LETTERS)}, got {num_choices}")
    if num_candidates < 1 or max_history < 1 or num_recommendations < 1:
        raise ValueError("num_candidates, max_history and num_recommendations must be >= 1, got "
                         f"{num_candidates}, {max_history}, {num_recommendations}")
    num_items = len(titles) - 1
    examples = []
    for user in users:
        sequence = np.asarray(sequences[user], dtype=np.int64)
        end = len(sequence) - (1 if split == "test" else 2)
        if end < 1 + (task == "cf_ranking_mc"):
            raise ValueError(f"user {user} has {len(sequence)} interactions, too few for a {split} example of "
                             f"{task}; evaluate users with at least {end - len(sequence) + 3} interactions")
        rng = np.random.default_rng([seed, user])
        history, target = [int(x) for x in sequence[:end]], int(sequence[end])
        if task == "cf_ranking_mc":
            held = int(rng.integers(len(history)))
            target = history.pop(held)
            history = [int(x) for x in rng.permutation(history[-max_history:])]
        else:
            history = history[-max_history:]
        size = {"ranking": num_candidates, "retrieval": 1}.get(task, num_choices)
        candidates = []
        if task != "retrieval":
            pool = None if negative_pools is None else negative_pools.get(user)
            negatives = _negatives(rng, set(int(x) for x in sequence), num_items, size - 1, user, pool)
            candidates = [int(x) for x in rng.permutation([target] + negatives)]
        examples.append(_example(task, user, history, target, candidates, titles, num_recommendations, noun))
    return examples


def _negatives(rng: np.random.Generator, seen: set[int], num_items: int, count: int, user: int,
               pool: Sequence[int] | None = None) -> list[int]:
    """``count`` distinct items drawn uniformly from ``pool`` (default 1..N) outside ``seen``."""
    universe = np.arange(1, num_items + 1) if pool is None else np.unique(np.asarray(pool, dtype=np.int64))
    pool = np.setdiff1d(universe, np.fromiter(seen, dtype=np.int64))
    if len(pool) < count:
        where = "never interacted with" if universe.size == num_items else "in its negative samples"
        raise ValueError(f"user {user} has only {len(pool)} items {where}, fewer than the {count} "
                         "negatives needed; lower num_candidates / num_choices")
    return [int(x) for x in rng.choice(pool, size=count, replace=False)]


def _example(task: str, user: int, history: list[int], target: int, candidates: list[int],
             titles: Sequence[str], num_recommendations: int, noun: str) -> LMExample:
    shown = {item: titles[item] for item in history + candidates}
    history_text = "\n".join(titles[item] for item in history)
    if task == "ranking":
        options = "\n".join(f"<SOI>{titles[item]}<EOI>" for item in candidates)
    else:
        options = "\n".join(f"{LETTERS[i]}. {titles[item]}" for i, item in enumerate(candidates))
    n = num_recommendations if task == "retrieval" else len(candidates)
    prompt = PROMPTS[task].format(history=history_text, candidates=options, n=n, noun=noun)
    return LMExample(task, user, prompt, target, history, candidates, shown, num_recommendations)


_LETTER_ALONE = re.compile(r"^\W*\(?([A-J])\s*(?:[.):\]\-]|$)")
_LETTER_SAID = re.compile(r"\b(?i:answer|option|choice)(?:\s+is)?\s*[:\-]?\s*\(?([A-J])\b")
_LETTER_MARKED = re.compile(r"(?:^|\s)\(?([A-J])[.):](?:\s|$)")


def parse_choice(answer: str, example: LMExample, matcher: TitleMatcher | None = None) -> int | None:
    """The option (index into ``example.candidates``) a multiple-choice answer picks, or ``None``.

    In order: a letter A-J that opens the answer (``"B"``, ``"(B) Heat"``, ``"B. Heat"``); a letter
    after "answer"/"option"/"choice"; a marked letter (``"... C) Heat ..."``); an option's title
    contained in the answer (normalised, the longest one wins); the matcher's fuzzy match among the
    options. RecAI takes the first word-bounded capital A-J anywhere, which reads the article in
    "A great film" as option A; genrec does not.
    """
    letters = LETTERS[:len(example.candidates)]
    text = str(answer or "").strip()
    for pattern in (_LETTER_ALONE, _LETTER_SAID, _LETTER_MARKED):
        found = pattern.search(text)
        if found and found.group(1).upper() in letters:
            return letters.index(found.group(1).upper())
    clean = f" {normalize_title(text)} "
    contained = [(len(normalize_title(example.titles[item])), i) for i, item in enumerate(example.candidates)
                 if normalize_title(example.titles[item]) and f" {normalize_title(example.titles[item])} " in clean]
    if contained:
        return max(contained)[1]
    if matcher is not None and normalize_title(text):
        item = matcher.match(text, candidates=example.candidates)
        if item in example.candidates:
            return example.candidates.index(item)
    return None
