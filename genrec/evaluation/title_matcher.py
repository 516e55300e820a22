"""Free text (an LLM's answer) -> catalogue items, as RecAI's RecLM-eval and Knowledge Plugin do it.

A :class:`TitleMatcher` holds the catalogue's titles (item indices 1..N, genrec's numbering) and maps
one piece of text to one item in three steps, first success wins:

1. **exact title**: the text equals a title after :func:`normalize_title` (lower case, only
   ``a-z0-9`` and single spaces, RecAI's ``_clean_string``). A title ending in a year, e.g.
   ``"Toy Story (1995)"``, also answers to its bare form ``"toy story"``; when several items share a
   normalised title the lowest index among the ``candidates`` wins, else the lowest index (ml-100k
   has 18 pairs of identical items);
2. **exact item id**: the text is a raw item id (``"1"``), optionally written ``item 1``, ``[1]`` or
   ``#1`` (only when ``ids`` are given);
3. **fuzzy title**: cosine similarity of character-trigram TF-IDF vectors, exactly RecAI's
   ``TFIDF_model`` (scikit-learn ``TfidfVectorizer`` defaults: raw counts, smooth idf
   ``ln((1 + n) / (1 + df)) + 1``, L2 norm; trigrams of the normalised text that contain no space;
   vocabulary fitted on the catalogue, unknown trigrams ignored), re-implemented with numpy/scipy.
   The best item is returned if its cosine is ``>= threshold``: RecAI uses 0.6 to match ranked
   titles to the ground truth and 0.8 for the ranking error taxonomy (:data:`RETRIEVAL_THRESHOLD`,
   :data:`STRICT_THRESHOLD`).

``candidates`` restricts step 3 first: the best candidate at or above the threshold wins, and only
otherwise the whole catalogue is searched, so a near-duplicate title outside the candidate list (a
sequel) does not steal a candidate's match, while a real out-of-list answer is still identified.

A list answer is split by :func:`split_list`: on RecAI's ``<end>`` marker, else on ``<SOI>…<EOI>``
spans, else on lines (``1. ``/``- `` numbering removed), else on ``;`` or commas, where adjacent
comma pieces are re-joined when together they are an exact title (``"The Good, The Bad and The
Ugly"``).

    >>> m = TitleMatcher(["Toy Story (1995)", "GoldenEye (1995)", "Four Rooms (1995)"])
    >>> m.match("toy story"), m.match("Golden Eye"), m.match("Star Wars")
    (1, 2, None)
    >>> m.match_list("1. Four Rooms\\n2. Toy Story (1995)\\n3. Star Wars")
    [3, 1, None]
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import numpy as np
from scipy import sparse

__all__ = ["RETRIEVAL_THRESHOLD", "STRICT_THRESHOLD", "TitleMatcher", "normalize_title", "split_list"]

RETRIEVAL_THRESHOLD = 0.6
"""RecAI's cosine threshold to count a ranked title as the ground truth (``sim_threshold`` 0.6)."""

STRICT_THRESHOLD = 0.8
"""RecAI's cosine threshold for the ranking error taxonomy (candidate / duplicate / history / copy)."""

_YEAR = re.compile(r"\s*\((\d{4}|[IVX]+)\)\s*$")
_NUMBERING = re.compile(r"^\s*(?:(?:title|item|rank)?\s*#?\(?\d{1,3}\s*[.):\-]|[-*\u2022])\s*", re.I)
_SPAN = re.compile(r"<SOI>(.*?)(?:<EOI>|$)", re.S)
_ID_FORMS = re.compile(r"^\s*(?:item\s*(?:id)?\s*[:#]?\s*|\[|#)?\s*([^\s\[\]#]+?)\s*\]?\s*$", re.I)
_MAX_JOIN = 6  # comma pieces tried together when re-joining a title that contains commas


def normalize_title(text: str) -> str:
    """Lower case, keep only ``a-z``, ``0-9`` and single spaces (RecAI's ``_clean_string``)."""
    text = re.sub(r"[^a-z0-9 ]+", "", str(text).lower().replace("\n", " ").replace("\t", " "))
    return re.sub(r"\s+", " ", text).strip()


def _trigrams(normalized: str) -> list[str]:
    """Character trigrams of a normalised string that contain no space (RecAI's ``_create_ngrams``)."""
    return [normalized[i:i + 3] for i in range(len(normalized) - 2) if " " not in normalized[i:i + 3]]


def split_list(text: str, is_title: Callable[[str], bool] | None = None) -> list[str]:
    """Splits a list answer into entries (see the module docstring); empty entries are dropped.

    Numbering (``1.``, ``2)``, ``Title3:``, bullets) is removed from each entry unless ``is_title``
    says the entry is a title as it stands (``"1-900 (1994)"``). Comma splitting is the last
    resort; it returns the raw pieces, and :meth:`TitleMatcher.split` re-joins pieces that together
    form a title.
    """
    text = str(text or "")
    if "<end>" in text:
        entries = text.split("<end>")
    elif "<SOI>" in text:
        entries = _SPAN.findall(text)
    else:
        lines = [line for line in text.splitlines() if line.strip()]
        if len(lines) > 1:
            entries = lines
        elif ";" in text or ";;" in text:
            entries = text.split(";")
        else:
            entries = text.split(",")
    return [entry for entry in (_clean_entry(e, is_title) for e in entries) if entry]


def _clean_entry(entry: str, is_title: Callable[[str], bool] | None = None) -> str:
    """Strips numbering, bullets, quotes, span markers and surrounding punctuation from one entry."""
    entry = entry.replace("<SOI>", " ").replace("<EOI>", " ").strip()
    if is_title is None or not is_title(_strip(entry)):
        entry = _NUMBERING.sub("", entry, count=1)
    return _strip(entry)


def _strip(entry: str) -> str:
    return entry.strip().strip("\"'`*").strip().rstrip(".").strip()


class TitleMatcher:
    """Maps free text to item indices 1..N by exact title, exact id, then trigram TF-IDF cosine.

    Args:
        titles: title of each item; ``titles[i - 1]`` belongs to item index ``i`` (pass
            ``catalog.fields["title"][1:]``, or titles with their year, e.g. ``"Kolya (1996)"``,
            which keeps items with the same name apart).
        ids: optional raw item id of each item, same order, for the exact-id step.
        threshold: default cosine threshold of the fuzzy step (RecAI: 0.6; 0.8 for the errors).

    Raises:
        ValueError: if ``titles`` is empty, ``ids`` has another length, or ``threshold`` is outside
            (0, 1].
    """

    def __init__(self, titles: Sequence[str], ids: Sequence[str] | None = None,
                 threshold: float = RETRIEVAL_THRESHOLD):
        if len(titles) == 0:
            raise ValueError("TitleMatcher needs at least one title; the catalogue is empty")
        if ids is not None and len(ids) != len(titles):
            raise ValueError(f"ids has {len(ids)} entries for {len(titles)} titles; give one raw id per title")
        self.threshold = _check_threshold(threshold)
        self.titles = [str(title) for title in titles]
        self.num_items = len(self.titles)
        self._exact: dict[str, list[int]] = {}  # normalised title -> every item with it, lowest first
        bare: dict[str, list[int]] = {}
        for index, title in enumerate(self.titles, start=1):
            self._exact.setdefault(normalize_title(title), []).append(index)
            without_year = normalize_title(_YEAR.sub("", title))
            if without_year:
                bare.setdefault(without_year, []).append(index)
        for key, indices in bare.items():  # a bare title never overrides a full one
            self._exact.setdefault(key, indices)
        self._exact.pop("", None)
        self._ids = {str(raw).strip(): index for index, raw in enumerate(ids or [], start=1)}
        self._fit([normalize_title(title) for title in self.titles])

    def _fit(self, documents: list[str]) -> None:
        """Builds the vocabulary, the smooth idf and the L2-normalised item matrix [N, V]."""
        grams = [_trigrams(doc) for doc in documents]
        self._vocab = {g: i for i, g in enumerate(sorted({g for doc in grams for g in doc}))}
        df = np.zeros(len(self._vocab))
        for doc in grams:
            df[[self._vocab[g] for g in set(doc)]] += 1
        self._idf = np.log((1 + len(documents)) / (1 + df)) + 1
        self._items = self._vectors(grams)  # CSR [N, V]

    def _vectors(self, grams: list[list[str]]) -> sparse.csr_matrix:
        """TF-IDF rows (raw counts x idf, L2-normalised) of trigram lists; unknown trigrams are dropped."""
        rows, cols, vals = [], [], []
        for row, doc in enumerate(grams):
            counts: dict[int, int] = {}
            for g in doc:
                col = self._vocab.get(g)
                if col is not None:
                    counts[col] = counts.get(col, 0) + 1
            if not counts:
                continue
            weights = {col: n * self._idf[col] for col, n in counts.items()}
            norm = math.sqrt(sum(w * w for w in weights.values()))
            for col, w in weights.items():
                rows.append(row)
                cols.append(col)
                vals.append(w / norm)
        return sparse.csr_matrix((vals, (rows, cols)), shape=(len(grams), max(len(self._vocab), 1)))

    def similarity(self, texts: Sequence[str]) -> np.ndarray:
        """Cosine similarity of each text to each item: float array [len(texts), N] (column j = item j + 1)."""
        queries = self._vectors([_trigrams(normalize_title(t)) for t in texts])
        return np.asarray((queries @ self._items.T).todense(), dtype=np.float64)

    def exact(self, text: str, candidates: Sequence[int] | None = None) -> int | None:
        """Item index whose normalised title (or raw id) equals ``text``, else ``None``.

        Of several items with that title, the lowest-indexed one among ``candidates`` wins, else
        the lowest-indexed one.
        """
        key = normalize_title(text)
        if key in self._exact:
            indices = self._exact[key]
            if candidates is not None and len(indices) > 1:
                pool = set(int(c) for c in candidates)
                return next((index for index in indices if index in pool), indices[0])
            return indices[0]
        if self._ids:
            raw = str(text).strip()
            if raw in self._ids:
                return self._ids[raw]
            form = _ID_FORMS.match(raw)
            if form and form.group(1) in self._ids:
                return self._ids[form.group(1)]
        return None

    def same_title(self, item: int) -> list[int]:
        """Every item whose normalised title equals item ``item``'s (itself included), lowest first."""
        return list(self._exact.get(normalize_title(self.titles[int(item) - 1]), [int(item)]))

    def best(self, text: str, candidates: Sequence[int] | None = None) -> tuple[int | None, float]:
        """``(item index, cosine)`` of the fuzzy step's best item, no threshold applied.

        ``(None, 0.0)`` when the text shares no trigram with any title. With ``candidates``, only
        those items (indices 1..N) are considered.
        """
        sims = self.similarity([text])[0]
        if candidates is not None:
            pool = self._check_items(candidates)
            if pool.size == 0:
                return None, 0.0
            pick = pool[int(np.argmax(sims[pool - 1]))]
            return (int(pick), float(sims[pick - 1])) if sims[pick - 1] > 0 else (None, 0.0)
        best = int(np.argmax(sims))
        return (best + 1, float(sims[best])) if sims[best] > 0 else (None, 0.0)

    def match(self, text: str, candidates: Sequence[int] | None = None,
              threshold: float | None = None) -> int | None:
        """The item index ``text`` names, or ``None`` (exact title, exact id, then fuzzy >= threshold).

        Args:
            text: one entry of an answer (a title, an id, a sentence naming one item).
            candidates: item indices tried first in the fuzzy step (see the module docstring).
            threshold: cosine threshold for this call (default: the matcher's).
        """
        threshold = self.threshold if threshold is None else _check_threshold(threshold)
        if not normalize_title(text):
            return None
        found = self.exact(text, candidates)
        if found is not None:
            return found
        if candidates is not None:
            item, score = self.best(text, candidates)
            if item is not None and score >= threshold:
                return item
        item, score = self.best(text)
        return item if item is not None and score >= threshold else None

    def split(self, text: str) -> list[str]:
        """Entries of a list answer: :func:`split_list`, with comma pieces re-joined into exact titles."""
        text = str(text or "")
        is_title = self._is_title
        if any(mark in text for mark in ("<end>", "<SOI>", ";")) or len(
                [line for line in text.splitlines() if line.strip()]) > 1:
            return split_list(text, is_title)
        pieces = split_list(text, is_title)
        entries, i = [], 0
        while i < len(pieces):
            for j in range(min(len(pieces), i + _MAX_JOIN), i + 1, -1):
                joined = ", ".join(pieces[i:j])
                if normalize_title(joined) in self._exact:
                    entries.append(joined)
                    i = j
                    break
            else:
                entries.append(pieces[i])
                i += 1
        return entries

    def _is_title(self, text: str) -> bool:
        return normalize_title(text) in self._exact

    def match_list(self, text: str, candidates: Sequence[int] | None = None,
                   threshold: float | None = None) -> list[int | None]:
        """Splits a list answer (:meth:`split`) and matches each entry (:meth:`match`), in order.

        Unmatched entries stay as ``None`` in their position; duplicates are kept (the caller
        counts them).
        """
        return [self.match(entry, candidates, threshold) for entry in self.split(text)]

    def _check_items(self, items: Sequence[int]) -> np.ndarray:
        pool = np.asarray(list(items), dtype=np.int64).reshape(-1)
        if pool.size and (pool.min() < 1 or pool.max() > self.num_items):
            raise ValueError(f"candidate item indices must be in 1..{self.num_items}, "
                             f"got values in {int(pool.min())}..{int(pool.max())}")
        return pool


def _check_threshold(threshold: float) -> float:
    if not 0.0 < float(threshold) <= 1.0:
        raise ValueError(f"a cosine threshold must be in (0, 1], got {threshold!r}")
    return float(threshold)
