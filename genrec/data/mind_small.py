"""A MIND-small folder as a genrec dataset: ``mind:<folder>``, click sequences or impressions.

MIND-small (Wu et al., ACL 2020, https://msnews.github.io) ships two archives,
``MINDsmall_train.zip`` and ``MINDsmall_dev.zip``, each holding ``news.tsv`` and ``behaviors.tsv``
(:mod:`genrec.data.mind` reads them). genrec expects them extracted side by side::

    <folder>/train/news.tsv  <folder>/train/behaviors.tsv
    <folder>/dev/news.tsv    <folder>/dev/behaviors.tsv

(``MINDsmall_train/`` and ``MINDsmall_dev/``, the archives' own names, work too). ``mind:<folder>``
names such a folder; ``mind:<name>`` without a slash is ``<data dir>/raw/mind/<name>``, so the
presets' ``mind:MINDsmall`` is ``data/raw/mind/MINDsmall`` in a checkout. The news of both splits
share one index (train first, then the dev news not in train; :func:`read_mind_news`).

Two views:

- **Click sequences** (:func:`mind_click_log`, what ``load_dataset("mind:<folder>")`` returns, for
  every sequential trainer and the ``loo`` / ``ratio`` splits): per user, the clicks of the history
  of their first impression (MIND orders them by time; they get distinct times just before that
  impression), then every clicked candidate at its impression's time, train and dev together.
- **Impressions** (:func:`impression_split`, ``experiment.split = "impressions"``, read by the
  content trainer): train = the train impressions before the last calendar day of the train
  period, valid = those of that last day (held out from training: model selection never sees
  dev), test = every dev impression. Each impression keeps its user, history, candidates and click
  labels; metrics are computed per impression (:mod:`genrec.evaluation.impressions`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from genrec.data.interactions import Interactions
from genrec.data.mind import MIND_URL, MindBehaviors, MindNews, read_mind_behaviors, read_mind_news
from genrec.data.readers import DatasetFileError, InteractionLog

__all__ = ["IMPRESSION_SPLIT", "ImpressionExamples", "ImpressionSet", "MindSmall", "impression_split",
           "mind_click_log", "mind_folder", "read_mind_small", "train_interactions"]

IMPRESSION_SPLIT = "impressions"
"""``experiment.split`` value of MIND's per-impression protocol."""

SUBFOLDERS = {"train": ("train", "MINDsmall_train"), "dev": ("dev", "MINDsmall_dev")}
FILES = ("news.tsv", "behaviors.tsv")


def mind_folder(argument: str, root: Path) -> Path:
    """The folder of ``mind:<argument>``: a path, or ``<root>/raw/mind/<argument>`` for a bare name."""
    folder = Path(argument).expanduser()
    if folder.is_dir() or "/" in argument or argument.startswith((".", "~")):
        return folder
    return Path(root) / "raw" / "mind" / argument


def split_folders(folder: Path) -> dict[str, Path]:
    """``{"train": ..., "dev": ...}`` subfolders of a MIND-small folder; DatasetFileError (one line,
    naming every expected file and where to get them) when a file is missing."""
    found = {}
    for split, names in SUBFOLDERS.items():
        found[split] = next((folder / name for name in names if all((folder / name / f).is_file() for f in FILES)),
                            folder / names[0])
    missing = [str(found[split] / name) for split in found for name in FILES if not (found[split] / name).is_file()]
    if missing:
        expected = ", ".join(f"{split}/{name}" for split in SUBFOLDERS for name in FILES)
        raise DatasetFileError(folder, f"MIND-small not found (missing {', '.join(missing)})",
                               f"a MIND folder holds {expected}: download MINDsmall_train.zip and MINDsmall_dev.zip "
                               f"from {MIND_URL} and extract them into {folder}/train and {folder}/dev, or name "
                               "your folder with experiment.dataset = 'mind:<folder>'")
    return found


@dataclass(frozen=True, eq=False)
class MindSmall:
    """The news (train + dev, one index) and the train and dev impressions of a MIND-small folder."""

    name: str
    news: MindNews
    train: MindBehaviors
    dev: MindBehaviors

    def fingerprint(self) -> str:
        """16 hex digits of the sha256 of the news ids and every impression (ids, users, history,
        candidates, labels) of both splits."""
        digest = hashlib.sha256()
        for text in self.news.catalog.item_ids:
            digest.update(text.encode("utf-8") + b"\0")
        for behaviors in (self.train, self.dev):
            for i in range(behaviors.num_impressions):
                digest.update(f"{behaviors.impression_ids[i]}\0{behaviors.user_ids[behaviors.users[i]]}\0".encode())
                for array in (behaviors.histories[i], behaviors.candidates[i], behaviors.labels[i]):
                    digest.update(len(array).to_bytes(4, "little") + array.astype("<i8").tobytes())
        return digest.hexdigest()[:16]


def read_mind_small(folder: str | Path, name: str | None = None) -> MindSmall:
    """Reads a MIND-small folder (see the module docstring); both splits must carry click labels."""
    folder = Path(folder)
    folders = split_folders(folder)
    news = read_mind_news([folders["train"] / "news.tsv", folders["dev"] / "news.tsv"])
    splits = {split: read_mind_behaviors(path / "behaviors.tsv", news) for split, path in folders.items()}
    for split, behaviors in splits.items():
        if not behaviors.labelled:
            raise DatasetFileError(behaviors.path, "has no click labels ('N1' instead of 'N1-0')",
                                   "MIND-small train and dev are labelled; the MIND-large test split cannot be used")
    return MindSmall(name or f"mind-{folder.resolve().name}", news, splits["train"], splits["dev"])


def mind_click_log(mind: MindSmall) -> InteractionLog:
    """The click sequences of a MIND folder as an interaction log (see the module docstring)."""
    users, items, times = [], [], []
    seen: set[str] = set()
    for behaviors in (mind.train, mind.dev):
        seconds = behaviors.times.astype("datetime64[s]").astype(np.int64).astype(np.float64)
        for i in range(behaviors.num_impressions):
            user = behaviors.user_ids[behaviors.users[i]]
            if user not in seen:  # the history before the user's first impression, in its order
                seen.add(user)
                history = behaviors.histories[i]
                users += [user] * len(history)
                items += [mind.news.catalog.item_ids[n] for n in history]
                times += list(seconds[i] - len(history) + np.arange(len(history)) - 1.0)
            clicked = behaviors.candidates[i][behaviors.labels[i] == 1]
            users += [user] * len(clicked)
            items += [mind.news.catalog.item_ids[n] for n in clicked]
            times += [seconds[i]] * len(clicked)
    fields = {field: dict(zip(mind.news.catalog.item_ids[1:], values[1:]))
              for field, values in mind.news.catalog.fields.items()}
    return InteractionLog(mind.name, users, items, np.array(times, dtype=np.float64), None, fields,
                          mind.news.catalog.source)


@dataclass
class ImpressionSet:
    """Impressions of one part of the split (I impressions).

    Attributes:
        impression_ids: raw impression id per impression.
        users: [I] user number, shared by train, valid and test (train users first, then users first
            seen in dev); GAUC groups by it.
        histories: [I] arrays, news indices clicked before the impression (the most recent
            ``max_history`` kept), possibly empty.
        candidates: [I] arrays, the news shown.
        labels: [I] int8 arrays aligned with ``candidates`` (1 = clicked).
    """

    impression_ids: list[str]
    users: np.ndarray
    histories: list[np.ndarray]
    candidates: list[np.ndarray]
    labels: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.impression_ids)

    def subset(self, keep: np.ndarray) -> ImpressionSet:
        """The impressions at the indices ``keep``, in that order."""
        return ImpressionSet([self.impression_ids[i] for i in keep], self.users[keep],
                             [self.histories[i] for i in keep], [self.candidates[i] for i in keep],
                             [self.labels[i] for i in keep])


def _impressions(behaviors: MindBehaviors, users: dict[str, int], max_history: int | None) -> ImpressionSet:
    user_index = np.array([users.setdefault(user, len(users)) for user in behaviors.user_ids], dtype=np.int64)
    cut = (lambda h: h) if max_history is None else (lambda h: h[len(h) - min(len(h), max_history):])
    return ImpressionSet(list(behaviors.impression_ids), user_index[behaviors.users],
                         [cut(h) for h in behaviors.histories], list(behaviors.candidates), list(behaviors.labels))


def impression_split(mind: MindSmall, max_history: int | None = None) -> tuple[ImpressionSet, ImpressionSet,
                                                                             ImpressionSet]:
    """``(train, valid, test)``: train impressions before the last day of the train period, those of
    that day, and the dev impressions (module docstring). Users are numbered in order of first
    appearance in train, then dev."""
    users: dict[str, int] = {}
    train = _impressions(mind.train, users, max_history)
    test = _impressions(mind.dev, users, max_history)
    days = mind.train.times.astype("datetime64[D]")
    last = days.max()
    held_out = days == last
    if held_out.all():
        raise DatasetFileError(mind.train.path, f"every train impression is on {last}, so no day is left to train on "
                               "once the last one is held out for validation",
                               "use MIND-small's train split as distributed (several days)")
    return train.subset(np.flatnonzero(~held_out)), train.subset(np.flatnonzero(held_out)), test


def train_interactions(mind: MindSmall, train: ImpressionSet) -> Interactions:
    """The training clicks over every news (item indices = the news index): per train user, their
    history then the clicked candidates of their training impressions in time order."""
    sequences: dict[int, list[np.ndarray]] = {}
    for user, history, candidates, labels in zip(train.users, train.histories, train.candidates, train.labels):
        parts = sequences.setdefault(int(user), [history])
        parts.append(candidates[labels == 1])
    order = sorted(sequences)
    user_ids = {index: raw for raw, index in _user_numbers(mind).items()}
    arrays = [np.concatenate(sequences[user]).astype(np.int64) for user in order]
    return Interactions(mind.name, [user_ids[user] for user in order], list(mind.news.catalog.item_ids), arrays,
                        [np.arange(len(a), dtype=np.float64) for a in arrays])


def _user_numbers(mind: MindSmall) -> dict[str, int]:
    users: dict[str, int] = {}
    for behaviors in (mind.train, mind.dev):
        for user in behaviors.user_ids:
            users.setdefault(user, len(users))
    return users


class ImpressionExamples(Dataset):
    """One training example per clicked candidate of a training impression (NRMS, Wu et al. 2019).

    Each example is ``history`` (int32 [H], right-padded), ``target`` (the clicked news) and
    ``negative_pool``: the non-clicked news of the same impression, padded with 0 to the longest
    pool of the batch. The model draws its K negatives from the pool at every step
    (:meth:`genrec.models.content.ContentRecommender.impression_negatives`), so each epoch sees
    fresh ones. Implements ``__getitems__``: pass :meth:`collate` as the loader's ``collate_fn``.
    """

    def __init__(self, train: ImpressionSet, max_history: int):
        histories = np.zeros((len(train), max_history), dtype=np.int32)
        pools, impressions, targets = [], [], []
        for i, (history, candidates, labels) in enumerate(zip(train.histories, train.candidates, train.labels)):
            kept = history[len(history) - min(len(history), max_history):]
            histories[i, :len(kept)] = kept
            pools.append(candidates[labels == 0])
            clicked = candidates[labels == 1]
            impressions += [i] * len(clicked)
            targets += clicked.tolist()
        if not targets:
            raise ValueError("no training examples: no training impression has a click")
        self.histories = torch.from_numpy(histories)
        self.lengths = np.array([len(pool) for pool in pools], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.pool = np.concatenate(pools + [np.zeros(1, dtype=np.int64)]).astype(np.int64)
        self.impressions = np.array(impressions, dtype=np.int64)
        self.targets = torch.tensor(targets, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {name: tensor[0] for name, tensor in self.__getitems__([i]).items()}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        index = np.asarray(indices, dtype=np.int64)
        impressions = self.impressions[index]
        lengths = self.lengths[impressions]
        width = np.arange(max(1, int(lengths.max())))
        inside = width[None, :] < lengths[:, None]
        positions = np.where(inside, self.offsets[impressions][:, None] + width[None, :], len(self.pool) - 1)
        return {"history": self.histories[torch.from_numpy(impressions)], "target": self.targets[index],
                "negative_pool": torch.from_numpy(np.where(inside, self.pool[positions], 0))}

    @staticmethod
    def collate(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch as ``__getitems__`` built it."""
        return batch

