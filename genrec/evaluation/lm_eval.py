"""RecLM-eval: any language model evaluated as a recommender (RecAI's RecLM-eval, offline).

    >>> from genrec.evaluation.lm_eval import evaluate_lm
    >>> from genrec.evaluation.lm_backends import RandomBackend
    >>> result = evaluate_lm(RandomBackend(), "ml-100k", "ranking", num_users=100, seed=2020)
    >>> result["hit@5"], result["ndcg@10"], result["duplicate_rate"]

Steps: the tasks' prompts (:mod:`genrec.evaluation.lm_tasks`) for a fixed set of users -> answers
from a backend (:mod:`genrec.evaluation.lm_backends`), cached -> each answer split into entries and
mapped to items by the :class:`~genrec.evaluation.title_matcher.TitleMatcher` -> metrics
(:mod:`genrec.evaluation.lm_metrics`).

**Matching.** For the metrics an entry is mapped with RecAI's threshold 0.6 (candidates first); for
the error taxonomy with 0.8, as RecAI does. Multiple-choice answers are read by
:func:`~genrec.evaluation.lm_tasks.parse_choice`.

**Results** (one flat dict): ``hit@K``, ``recall@K``, ``precision@K``, ``ndcg@K``, ``mrr@K``,
``map@K`` for K in ``k_list``; the error taxonomy (``not_in_catalogue_rate``,
``not_in_candidates_rate``, ``duplicate_rate``, ``in_history_rate``, ``copy_error`` = mean LCS with
the input order, ``copies_input_rate``, ``empty_answer_rate``); ``malformed_answer_rate`` (replies
the backend could not give, e.g. an endpoint's answer that is not the OpenAI JSON shape; scored as
misses). Multiple choice: ``accuracy@1`` and ``none_ratio`` (answers naming no option). Plus
``task``, ``model``, ``dataset``, ``num_users``, ``answers_cached``, ``answers_generated``,
``seconds`` (answering only).

**Cache.** Answers are appended, one JSON line per (model identity, task, user, prompt), to
``cache_path`` (default ``<data dir>/cache/lmeval/<dataset>-<task>-<model hash>.jsonl``), one
``write`` + ``fsync`` per batch. A record's key hashes the backend's identity, the task, the user and
the prompt text, so another model, setting or prompt never reuses it. A run killed at any point
(even ``kill -9``) resumes from the cache; a torn last line is cut off. Malformed replies are not
cached (the next run asks again). A lock keeps two processes from writing one file.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

from genrec import assets
from genrec.evaluation.lm_backends import Reply
from genrec.evaluation.lm_metrics import LM_KS, answer_errors, error_rates, list_metrics, relevance
from genrec.evaluation.lm_tasks import LMExample, build_examples, check_task, parse_choice, pick_users
from genrec.evaluation.title_matcher import RETRIEVAL_THRESHOLD, STRICT_THRESHOLD, TitleMatcher
from genrec.io import LockedError, appended_lines, file_lock, fingerprint
from genrec.progress import progress

__all__ = ["LMEvalError", "default_cache_path", "evaluate_examples", "evaluate_lm", "load_answers", "map_entries",
           "prepare_examples", "read_negative_samples", "score_answers"]

NOUNS = {"ml-100k": "movie", "ml-1m": "movie"}


class LMEvalError(RuntimeError):
    """An answer cache that is locked or unreadable, or examples that cannot be evaluated."""


def record_key(identity: str, example: LMExample) -> str:
    """The cache key of one answer: sha256 of (model identity, task, user, prompt)."""
    return fingerprint({"model": identity, "task": example.task, "user": example.user, "prompt": example.prompt})


def default_cache_path(dataset: str, task: str, identity: str, root: str | Path | None = None) -> Path:
    """``<root>/cache/lmeval/<dataset>-<task>-<identity hash 12>.jsonl`` (root: the data dir)."""
    root = Path(root) if root is not None else assets.data_dir()
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", dataset).strip("_") or "dataset"
    return root / "cache" / "lmeval" / f"{name}-{task}-{fingerprint(identity)[:12]}.jsonl"


def load_answers(path: str | Path, repair: bool = False) -> dict[str, str]:
    """Cached answers by key; a torn last line is ignored (and cut off with ``repair``).

    Raises:
        LMEvalError: a complete line that is not a record, naming the file and line.
    """
    answers = {}
    for number, line in appended_lines(path, repair, "genrec.lmeval"):
        try:
            record = json.loads(line)
            if not isinstance(record.get("key"), str) or not isinstance(record.get("answer"), str):
                raise ValueError("no string 'key' and 'answer'")
        except (ValueError, AttributeError) as error:
            raise LMEvalError(f"{path}: line {number} is not an answer record ({error}); delete the file (or that "
                              "line) and run again") from None
        answers[record["key"]] = record["answer"]
    return answers


def prepare_examples(data, task: str, users: Sequence[int] | None = None, num_users: int | None = 100,
                     seed: int = 2020, split: str = "test", noun: str | None = None, **task_kwargs):
    """``(examples, matcher, titles, dataset name)`` for a dataset name or ``(interactions, catalog)``.

    ``task_kwargs`` go to :func:`~genrec.evaluation.lm_tasks.build_examples` (``max_history``,
    ``num_candidates``, ``num_choices``, ``num_recommendations``).
    """
    from genrec.data import load_dataset
    from genrec.llm.tasks import item_title

    check_task(task)
    if isinstance(data, str):
        name = data
        interactions, catalog = load_dataset(data)
    else:
        interactions, catalog = data
        name = getattr(interactions, "name", "dataset")
    titles = [""] + [item_title(catalog, item) for item in range(1, catalog.num_items + 1)]
    matcher = TitleMatcher(titles[1:], ids=catalog.item_ids[1:])
    chosen = pick_users(len(interactions.sequences), num_users, users, seed)
    noun = noun or NOUNS.get(name, "item")
    pools = None
    if isinstance(data, str) and data.startswith("recai:"):
        pools = read_negative_samples(Path(data.partition(":")[2]).expanduser() / "negative_samples.txt",
                                      interactions)
    examples = build_examples(task, interactions.sequences, titles, chosen, seed=seed, split=split, noun=noun,
                              negative_pools=pools, **task_kwargs)
    return examples, matcher, titles, name


def read_negative_samples(path: Path, interactions) -> dict[int, list[int]] | None:
    """RecAI's ``negative_samples.txt`` (``user_id neg_1 neg_2 ...``, raw ids) as user index -> item
    indices; ``None`` when the file does not exist. Ids the dataset does not know are skipped.

    Raises:
        LMEvalError: a line that is not ids separated by spaces, naming the file and line.
    """
    if not path.is_file():
        return None
    users = {raw: index for index, raw in enumerate(interactions.user_ids)}
    items = {raw: index for index, raw in enumerate(interactions.item_ids) if index > 0}
    pools: dict[int, list[int]] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            user, *negatives = line.split()
            if not negatives:
                raise LMEvalError(f"{path}: line {number} names user {user!r} but no negative items; write "
                                  "'user_id neg_1 neg_2 ...' per line (RecAI's format) or delete the file")
            if user in users:
                pools[users[user]] = [items[raw] for raw in negatives if raw in items]
    return pools


def evaluate_lm(backend, data, task: str, users: Sequence[int] | None = None, num_users: int | None = 100,
                k_list: Sequence[int] = LM_KS, cache_path: str | Path | None = None, seed: int = 2020,
                split: str = "test", noun: str | None = None, use_cache: bool = True, show_progress: bool = True,
                **task_kwargs) -> dict:
    """Evaluates ``backend`` on ``task`` for a fixed set of users; returns the flat result dict.

    Args:
        backend: an :mod:`~genrec.evaluation.lm_backends` backend (``identity``, ``batch_size``,
            ``answer``).
        data: a dataset name for :func:`genrec.data.load_dataset` (``"ml-100k"``,
            ``"recai:<folder>"``) or an ``(Interactions, ItemCatalog)`` pair.
        task: ``retrieval``, ``ranking``, ``cf_ranking_mc`` or ``seq_ranking_mc``.
        users: user indices to evaluate (default: ``num_users`` drawn with ``seed``).
        num_users: how many users to draw when ``users`` is not given (``None``: all).
        k_list: cut-offs of the ranking metrics.
        cache_path: the answer cache (default :func:`default_cache_path`).
        seed: seed of the user draw, negatives and shuffles.
        split: ``test`` or ``valid`` (leave-one-out).
        noun: item noun of the prompts (default ``movie`` for MovieLens, else ``item``).
        use_cache: read and write the cache (off: answer everything, write nothing).
        show_progress: a progress bar while answering.
        task_kwargs: ``max_history`` (20), ``num_candidates`` (20), ``num_choices`` (10),
            ``num_recommendations`` (10).

    Raises:
        UnknownTaskError, ValueError: a bad task or argument, before any answer is asked for.
        BackendError: the backend cannot answer (what was answered before is cached).
        LMEvalError: the cache is locked by another process or unreadable.
    """
    examples, matcher, titles, name = prepare_examples(data, task, users, num_users, seed, split, noun, **task_kwargs)
    if use_cache and cache_path is None:
        cache_path = default_cache_path(name, task, backend.identity)
    result = evaluate_examples(backend, examples, matcher, k_list, cache_path if use_cache else None, show_progress)
    result["dataset"] = name
    return result


def evaluate_examples(backend, examples: Sequence[LMExample], matcher: TitleMatcher,
                      k_list: Sequence[int] = LM_KS, cache_path: str | Path | None = None,
                      show_progress: bool = True) -> dict:
    """Answers (cache first) and scores prepared examples of one task; see :func:`evaluate_lm`."""
    if not examples:
        raise LMEvalError("no examples to evaluate: the user selection is empty")
    task = check_task(examples[0].task)
    for example in examples:
        if example.task != task:
            raise LMEvalError(f"examples mix tasks {task!r} and {example.task!r}; evaluate one task at a time")
        if task != "retrieval" and not example.candidates:
            raise LMEvalError(f"the {task} example of user {example.user} has an empty candidate list; every "
                              "ranking or multiple-choice example needs candidates")
    keys = [record_key(backend.identity, example) for example in examples]
    replies: dict[str, Reply] = {}
    generated, started = 0, time.perf_counter()
    if cache_path is None:
        generated = _answer(backend, examples, keys, replies, None, show_progress)
    else:
        path = Path(cache_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with file_lock(path.with_name(path.name + ".lock"), blocking=False):
                replies.update({key: Reply(text) for key, text in load_answers(path, repair=True).items()})
                todo = [i for i, key in enumerate(keys) if key not in replies]
                generated = _answer(backend, [examples[i] for i in todo], [keys[i] for i in todo], replies, path,
                                    show_progress)
        except LockedError:
            raise LMEvalError(f"{path}: another process is writing this answer cache; wait for it (or stop it) "
                              "and run again") from None
    seconds = time.perf_counter() - started
    result = {"task": task, "model": backend.identity, "num_users": len(examples)}
    result.update(score_answers(examples, [replies[key] for key in keys], matcher, k_list))
    result.update({"answers_cached": len(examples) - generated, "answers_generated": generated, "seconds": seconds})
    return result


def _answer(backend, examples: list[LMExample], keys: list[str], replies: dict[str, Reply], path: Path | None,
            show_progress: bool) -> int:
    """Asks the backend batch by batch; appends good answers to ``path`` after each batch."""
    bar = progress(total=len(examples), desc=f"lmeval {examples[0].task if examples else ''}", unit="answer",
                   disable=not show_progress or not examples)
    handle = open(path, "a", encoding="utf-8") if path is not None else None
    try:
        step = max(1, int(getattr(backend, "batch_size", 8)))
        for start in range(0, len(examples), step):
            batch, batch_keys = examples[start:start + step], keys[start:start + step]
            answers = backend.answer(batch)
            if len(answers) != len(batch):
                raise LMEvalError(f"backend {backend.identity} gave {len(answers)} answers for {len(batch)} prompts")
            lines = []
            for example, key, reply in zip(batch, batch_keys, answers):
                replies[key] = reply
                if reply.error is None:
                    lines.append(json.dumps({"key": key, "task": example.task, "user": example.user,
                                             "model": backend.identity[:200], "answer": reply.text},
                                            ensure_ascii=False) + "\n")
            if handle is not None and lines:
                handle.write("".join(lines))
                handle.flush()
                os.fsync(handle.fileno())
            bar.update(len(batch))
    finally:
        bar.close()
        if handle is not None:
            handle.close()
    return len(examples)


def map_entries(matcher: TitleMatcher, entries: Sequence[str], candidates: Sequence[int] | None,
                threshold: float) -> list[int | None]:
    """Item of each entry (:meth:`TitleMatcher.match`); an entry naming an item already listed takes
    a not yet listed item with the same title, if there is one among the candidates (ml-100k's
    identical twins, which a title alone cannot tell apart, are then not counted as duplicates)."""
    pool = set(candidates) if candidates is not None else None
    items: list[int | None] = []
    for entry in entries:
        item = matcher.match(entry, candidates, threshold)
        if item is not None and item in items:
            twins = [t for t in matcher.same_title(item) if t not in items and (pool is None or t in pool)]
            item = twins[0] if twins else item
        items.append(item)
    return items


def score_answers(examples: Sequence[LMExample], replies: Sequence[Reply], matcher: TitleMatcher,
                  k_list: Sequence[int] = LM_KS, threshold: float = RETRIEVAL_THRESHOLD,
                  strict_threshold: float = STRICT_THRESHOLD) -> dict[str, float]:
    """Metrics and error rates of answers to examples of one task (see the module docstring)."""
    malformed = [reply.error is not None for reply in replies]
    out: dict[str, float] = {}
    if examples[0].task.endswith("_mc"):
        choices = [None if reply.error else parse_choice(reply.text, example, matcher)
                   for example, reply in zip(examples, replies)]
        correct = [choice is not None and example.candidates[choice] == example.target
                   for example, choice in zip(examples, choices)]
        out["accuracy@1"] = sum(correct) / len(examples)
        out["none_ratio"] = sum(choice is None for choice in choices) / len(examples)
    else:
        rels, flags, empty = [], [], []
        for example, reply in zip(examples, replies):
            entries = [] if reply.error else matcher.split(reply.text)
            candidates = example.candidates or None
            items = map_entries(matcher, entries, candidates, threshold)
            strict = map_entries(matcher, entries, candidates, strict_threshold)
            rels.append(relevance(items, [example.target]))
            flags.append(answer_errors(strict, example.history, example.candidates if example.task == "ranking"
                                       else None))
            empty.append(float(not entries and reply.error is None))
        out.update(list_metrics(rels, 1, k_list))
        out.update(error_rates(flags))
        out["empty_answer_rate"] = sum(empty) / len(examples)
    out["malformed_answer_rate"] = sum(malformed) / len(examples)
    return out
