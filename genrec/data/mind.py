"""MIND (Microsoft News Dataset) files -> news text and impressions, with impression ids kept.

MIND (Wu et al., ACL 2020, https://msnews.github.io/) ships each split as a folder holding two
tab-separated files without a header:

- ``news.tsv``: ``news_id, category, subcategory, title, abstract, url, title_entities,
  abstract_entities`` (the entity columns are JSON lists, often ``[]``; any column but the id may
  be empty).
- ``behaviors.tsv``: ``impression_id, user_id, time, history, impressions``. ``time`` is
  ``"11/11/2019 9:05:58 AM"``; ``history`` is the user's clicked news before the impression,
  space-separated and ordered by time (may be empty); ``impressions`` are the news shown, as
  ``"N1-1 N2-0 ..."`` (1 = clicked). The test split of MIND-large has no labels (``"N1 N2 ..."``).

:func:`read_mind_news` numbers the news 1..N in order of first appearance (0 is padding, as for
every genrec item index) and keeps the text columns in an :class:`ItemCatalog` (fields ``title``,
``category``, ``subcategory``, ``abstract``), the rest beside it. Several news files (train + dev,
as Legommenders concatenates them) are merged: the first row of a news id wins. A news id twice in
one file is an error.

:func:`read_mind_behaviors` keeps **one record per impression** (candidates and labels aligned, the
impression id kept), unlike Legommenders, which explodes impressions into (user, news, click) rows
and drops the impression id, so its metrics can only be grouped by user. Per-impression metrics
(the MIND protocol) are in :mod:`genrec.evaluation.impressions`.

Every malformed row (wrong column count, bad time, bad label, empty impression, repeated impression
id) and every news id that the news files do not list raises :class:`DatasetFileError` naming the
file and the line.

    >>> news, behaviors = read_mind("MINDsmall_dev")
    >>> news.catalog.text(behaviors.candidates[0][0])
    'Title. Category: sports. Subcategory: golf. Abstract: ...'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from genrec.data.catalog import PAD, ItemCatalog
from genrec.data.readers import DatasetFileError, open_text

__all__ = ["MIND_URL", "MindBehaviors", "MindNews", "read_mind", "read_mind_behaviors", "read_mind_news"]

MIND_URL = "https://msnews.github.io/"
NEWS_COLUMNS = ("news_id", "category", "subcategory", "title", "abstract", "url", "title_entities",
                "abstract_entities")
BEHAVIOR_COLUMNS = ("impression_id", "user_id", "time", "history", "impressions")
TEXT_FIELDS = ("title", "category", "subcategory", "abstract")
"""News columns that become :class:`ItemCatalog` fields, in the order the catalogue renders them."""
TIME_FORMAT = "%m/%d/%Y %I:%M:%S %p"

_FIX = f"MIND files come from {MIND_URL} (e.g. MINDsmall_train.zip); extract the archive again"


@dataclass(frozen=True, eq=False)
class MindNews:
    """The news of one or more ``news.tsv`` files, indexed 1..N (0 is padding).

    Attributes:
        catalog: Text fields ``title``, ``category``, ``subcategory``, ``abstract`` per news index;
            ``catalog.item_ids`` are the raw news ids (``item_ids[0]`` is ``"[PAD]"``).
        index: Raw news id -> news index (1..N).
        urls: URL per news index (``""`` at 0).
        title_entities: Raw JSON of the title entities per news index (``""`` at 0).
        abstract_entities: Raw JSON of the abstract entities per news index (``""`` at 0).
    """

    catalog: ItemCatalog
    index: dict[str, int]
    urls: list[str]
    title_entities: list[str]
    abstract_entities: list[str]

    @property
    def num_news(self) -> int:
        """Number of news N (padding excluded)."""
        return self.catalog.num_items


@dataclass(frozen=True, eq=False)
class MindBehaviors:
    """The impressions of one ``behaviors.tsv``, in file order (I impressions, U users).

    Arrays are read-only.

    Attributes:
        path: The file read.
        impression_ids: Raw impression id per impression [I].
        user_ids: Raw user id per user index, in order of first appearance [U].
        users: int64 [I], user index of each impression.
        times: datetime64[s] [I], impression time (naive, as written in the file).
        histories: [I] int64 arrays, news indices of the user's clicks before the impression, in
            file order (MIND orders them by time); empty when the history is.
        candidates: [I] int64 arrays, news indices shown in the impression, in file order.
        labels: [I] int8 arrays aligned with ``candidates`` (1 = clicked), or ``None`` for an
            unlabelled file (MIND-large test).
    """

    path: Path
    impression_ids: list[str]
    user_ids: list[str]
    users: np.ndarray
    times: np.ndarray
    histories: list[np.ndarray]
    candidates: list[np.ndarray]
    labels: list[np.ndarray] | None

    @property
    def num_impressions(self) -> int:
        """Number of impressions I."""
        return len(self.impression_ids)

    @property
    def num_users(self) -> int:
        """Number of distinct users U."""
        return len(self.user_ids)

    @property
    def labelled(self) -> bool:
        """Whether the file carries click labels."""
        return self.labels is not None


def read_mind(folder: str | Path, news_paths: Sequence[str | Path] | None = None) -> tuple[MindNews, MindBehaviors]:
    """Read a MIND split folder (``news.tsv`` + ``behaviors.tsv``).

    Args:
        folder: Folder holding ``behaviors.tsv`` (and ``news.tsv``, unless ``news_paths`` is given).
        news_paths: News files to index instead of ``<folder>/news.tsv``, e.g. the train and dev
            ``news.tsv`` together so that both splits share one news index.

    Returns:
        ``(news, behaviors)``.
    """
    folder = Path(folder)
    news = read_mind_news(news_paths if news_paths is not None else [folder / "news.tsv"])
    return news, read_mind_behaviors(folder / "behaviors.tsv", news)


def read_mind_news(paths: str | Path | Sequence[str | Path]) -> MindNews:
    """Read and merge ``news.tsv`` files; news are indexed 1..N in order of first appearance.

    Args:
        paths: One file or several; a news id found in an earlier file keeps that file's row.

    Raises:
        DatasetFileError: Missing file, a line without 8 tab-separated columns, an empty news id,
            or a news id repeated within one file.
    """
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(path) for path in paths]
    if not paths:
        raise ValueError("read_mind_news needs at least one news.tsv path")
    index: dict[str, int] = {}
    rows: list[list[str]] = []
    for path in paths:
        seen: set[str] = set()
        for number, values in _rows(path, len(NEWS_COLUMNS)):
            news_id = values[0]
            if not news_id:
                raise DatasetFileError(path, f"line {number} has an empty news_id", _FIX)
            if news_id in seen:
                raise DatasetFileError(path, f"line {number} repeats news id {news_id!r}", _FIX)
            seen.add(news_id)
            if news_id not in index:
                index[news_id] = len(rows) + 1
                rows.append(values)
    if not rows:
        raise DatasetFileError(paths[0], "no news (the file is empty)", _FIX)
    columns = {name: [""] + [row[position] for row in rows] for position, name in enumerate(NEWS_COLUMNS)}
    catalog = ItemCatalog([PAD, *index], {name: columns[name] for name in TEXT_FIELDS}, ", ".join(map(str, paths)))
    return MindNews(catalog, index, columns["url"], columns["title_entities"], columns["abstract_entities"])


def read_mind_behaviors(path: str | Path, news: MindNews) -> MindBehaviors:
    """Read ``behaviors.tsv``, one record per impression, news ids mapped through ``news.index``.

    A file is either labelled (every candidate written ``"<news id>-<0|1>"``) or unlabelled (every
    candidate a bare news id); mixing the two is an error.

    Raises:
        DatasetFileError: Missing file; a line without 5 tab-separated columns, with an empty or
            repeated impression id, an empty user id, a time not in ``TIME_FORMAT``, no
            candidates, a label other than 0/1, or labelled and unlabelled candidates mixed; a
            news id absent from ``news`` (the message names the line, the id and the fix).
    """
    path = Path(path)
    impression_ids: list[str] = []
    seen_impressions: set[str] = set()
    user_index: dict[str, int] = {}
    users: list[int] = []
    times: list[datetime] = []
    histories: list[np.ndarray] = []
    candidates: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    labelled: bool | None = None
    for number, (impression_id, user_id, time, history, shown) in _rows(path, len(BEHAVIOR_COLUMNS)):
        where = f"line {number}"
        if not impression_id or impression_id in seen_impressions:
            problem = "an empty impression_id" if not impression_id else f"impression id {impression_id!r} again"
            raise DatasetFileError(path, f"{where} has {problem}", _FIX)
        if not user_id:
            raise DatasetFileError(path, f"{where} has an empty user_id", _FIX)
        try:
            times.append(datetime.strptime(time, TIME_FORMAT))
        except ValueError:
            raise DatasetFileError(path, f"{where} has the time {time!r}, expected e.g. '11/11/2019 9:05:58 AM' "
                                   f"({TIME_FORMAT})", _FIX) from None
        tokens = shown.split()
        if not tokens:
            raise DatasetFileError(path, f"{where} (impression {impression_id}) shows no news", _FIX)
        parsed = [token.rpartition("-") if "-" in token else ("", "", token) for token in tokens]
        has_labels = {bool(sep) for _, sep, _ in parsed}
        if len(has_labels) > 1 or (labelled is not None and has_labels != {labelled}):
            raise DatasetFileError(path, f"{where} mixes labelled ('N1-1') and unlabelled ('N1') candidates "
                                   "with the rest of the file; a file is either all labelled or all unlabelled",
                                   _FIX)
        labelled = has_labels.pop()
        if labelled:
            bad = next((token for token, (_, _, label) in zip(tokens, parsed) if label not in ("0", "1")), None)
            if bad is not None:
                raise DatasetFileError(path, f"{where} has the candidate {bad!r}; expected '<news id>-0' or "
                                       "'<news id>-1'", _FIX)
            labels.append(np.array([label == "1" for _, _, label in parsed], dtype=np.int8))
            shown_ids = [news_id for news_id, _, _ in parsed]
        else:
            shown_ids = tokens
        candidates.append(_news_indices(shown_ids, news, path, number, "impressions"))
        histories.append(_news_indices(history.split(), news, path, number, "history"))
        impression_ids.append(impression_id)
        seen_impressions.add(impression_id)
        users.append(user_index.setdefault(user_id, len(user_index)))
    if not impression_ids:
        raise DatasetFileError(path, "no impressions (the file is empty)", _FIX)
    for array in (*histories, *candidates, *labels):
        array.setflags(write=False)
    user_array = np.array(users, dtype=np.int64)
    time_array = np.array(times, dtype="datetime64[s]")
    for array in (user_array, time_array):
        array.setflags(write=False)
    return MindBehaviors(path, impression_ids, list(user_index), user_array, time_array, histories, candidates,
                         labels if labelled else None)


def _rows(path: Path, width: int):
    """``(line number, values)`` per non-blank line of a header-less TSV with exactly ``width`` columns."""
    with open_text(path, _FIX) as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            values = line.split("\t")
            if len(values) != width:
                raise DatasetFileError(path, f"line {number} has {len(values)} tab-separated columns, expected "
                                       f"{width}", _FIX)
            yield number, values


def _news_indices(news_ids: list[str], news: MindNews, path: Path, number: int, column: str) -> np.ndarray:
    """News indices of raw ids; an unknown id raises DatasetFileError naming the line and column."""
    try:
        return np.array([news.index[news_id] for news_id in news_ids], dtype=np.int64)
    except KeyError as error:
        raise DatasetFileError(path, f"line {number} ({column}) names the news id {error.args[0]!r}, which no news "
                               f"file lists ({news.num_news} news read)",
                               "read the news.tsv of the same MIND split (or pass several news files, e.g. "
                               "train and dev, to read_mind_news)") from None
