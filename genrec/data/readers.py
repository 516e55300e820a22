"""Readers from dataset files to an :class:`InteractionLog` (rows in file order + item fields).

Formats:

- **RecBole atomic files** (``<name>.inter``, ``<name>.item``): UTF-8, tab-separated, one header
  line of ``field:type`` (types ``token``, ``token_seq``, ``float``, ``float_seq``; ``*_seq``
  values are space-separated). ``.inter`` needs ``user_id`` and ``item_id`` and may have
  ``rating`` and ``timestamp`` (without one, file order is time order); every ``.item`` column but
  ``item_id`` becomes an item field, verbatim.
- **Amazon review data 2014, 5-core** (McAuley et al.; download
  ``reviews_<Category>_5.json.gz`` and ``meta_<Category>.json.gz`` from
  https://snap.stanford.edu/data/amazon/productGraph/categoryFiles/): reviews are gzipped JSON
  lines with ``reviewerID``, ``asin``, ``overall`` (rating), ``unixReviewTime``; meta lines are
  Python dict literals (single quotes), parsed with ``ast.literal_eval`` (never ``eval``), and
  only for the asins that occur in the reviews. Item fields: ``title``, ``brand``,
  ``categories`` (the category paths flattened, duplicates dropped) and ``description``, all
  HTML-unescaped and whitespace-collapsed, the description cut to 100 words.
- **RecAI** (microsoft/RecAI): ``metadata.json`` is JSON lines, line n describing item n (from 1),
  with the title under ``title``, ``app_name``, ``TitleName`` or ``GameName``;
  ``sequential_data.txt`` holds ``user item_1 item_2 ...`` per line in time order, so the
  timestamps are synthesised as 0..n-1 per user.

Items without metadata get empty fields. A missing, unreadable or malformed file raises
:class:`DatasetFileError` naming the file (and line) and the fix: a header without rows, a row
with another number of columns than the header, a last line without its newline (a file cut
short; pinned assets are checked against the record of their extraction instead), a value that
is not a number, and a timestamp or rating that is not finite (``nan`` would sort last and change
the test targets).
"""

from __future__ import annotations

import ast
import contextlib
import gzip
import json
import operator
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from genrec.data.catalog import clean_text

AMAZON_URL = "https://snap.stanford.edu/data/amazon/productGraph/categoryFiles/"
RECAI_TITLE_FIELDS = ("title", "app_name", "TitleName", "GameName")
_ATOMIC_TYPES = {"token", "token_seq", "float", "float_seq"}
_AMAZON_ASIN = re.compile(r"""['"]asin['"]\s*:\s*['"]([^'"]+)['"]""")
_DESCRIPTION_WORDS = 100


class DatasetFileError(RuntimeError):
    """A dataset file is missing, unreadable or malformed; the message names the file and the fix."""

    def __init__(self, path: Path, problem: str, fix: str):
        super().__init__(f"{path}: {problem}; {fix}")
        self.path = path


@dataclass
class InteractionLog:
    """Interactions as read, one row per interaction in file order, plus item fields.

    Attributes:
        name: Dataset name.
        users: Raw user id per row.
        items: Raw item id per row.
        timestamps: [rows] float64 timestamps.
        ratings: [rows] float64 ratings, or None.
        item_fields: Field name -> raw item id -> text (missing ids mean "").
        item_source: The file the item fields come from (for messages), ``""`` for none.
    """

    name: str
    users: list[str]
    items: list[str]
    timestamps: np.ndarray
    ratings: np.ndarray | None = None
    item_fields: dict[str, dict[str, str]] = field(default_factory=dict)
    item_source: str = ""


@contextlib.contextmanager
def open_text(path: Path, fix: str) -> Iterator[IO[str]]:
    """Open a UTF-8 text file, gunzipped if it ends in ``.gz``; I/O and decoding errors become DatasetFileError."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            yield handle
    except FileNotFoundError:
        raise DatasetFileError(path, "file not found", fix) from None
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as error:
        raise DatasetFileError(path, f"unreadable or corrupt ({error})", fix) from error


def read_atomic(path: Path, fix: str, complete_lines: bool = True) -> dict[str, list[str]]:
    """Read a RecBole atomic file into columns of raw strings, keyed by field name (type dropped).

    With ``complete_lines``, a last line without its newline is an error (the file was cut short).
    """
    with open_text(path, fix) as handle:
        text = handle.read()
    lines = text.splitlines()
    if not lines:
        raise DatasetFileError(path, "empty file, expected a 'field:type' header", fix)
    if len(lines) == 1:
        raise DatasetFileError(path, "has a header but no rows (a file cut short or written empty)", fix)
    if complete_lines and not text.endswith("\n"):
        raise DatasetFileError(path, f"line {len(lines)} ends without a newline, so the file looks cut short "
                               f"mid-line", f"{fix} (a complete file ends with a newline; add one if it is complete)")
    header = [column.partition(":") for column in lines[0].split("\t")]
    bad = [f"{name}:{kind}" for name, _, kind in header if kind not in _ATOMIC_TYPES]
    if bad:
        raise DatasetFileError(path, f"header fields {bad} are not 'name:type' with a type in "
                               f"{sorted(_ATOMIC_TYPES)}", fix)
    width, rows = len(header), lines[1:]
    if set(map(operator.methodcaller("count", "\t"), rows)) - {width - 1}:
        number, line = next((n, line) for n, line in enumerate(rows, start=2) if line.count("\t") != width - 1)
        raise DatasetFileError(path, f"line {number} has {line.count(chr(9)) + 1} tab-separated fields, "
                               f"the header has {width}", fix)
    values = "\t".join(rows).split("\t") if rows else []
    return {name: values[column::width] for column, (name, _, _) in enumerate(header)}


def floats(path: Path, column: str, values: list[str], fix: str) -> np.ndarray:
    """Parse one column as float64; a bad value names its line (header = line 1)."""
    try:
        parsed = np.fromiter(map(float, values), dtype=np.float64, count=len(values))
    except ValueError:
        number, value = next((n, v) for n, v in enumerate(values, start=2) if not _is_float(v))
        raise DatasetFileError(path, f"column {column!r} has the non-numeric value {value!r} on line {number}",
                               fix) from None
    finite(path, column, parsed, fix, first_line=2)
    return parsed


def finite(path: Path, column: str, values: np.ndarray, fix: str, first_line: int = 1,
           lines: list[int] | None = None) -> None:
    """Raise DatasetFileError naming the line of the first non-finite value (``nan``, ``inf``) of a column."""
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        number = lines[bad[0]] if lines is not None else int(bad[0]) + first_line
        raise DatasetFileError(path, f"column {column!r} has the non-finite value {float(values[bad[0]])!r} on line "
                               f"{number} ({len(bad)} such values)", fix)


def read_recbole(folder: Path, name: str, fix: str, complete_lines: bool = True) -> InteractionLog:
    """Read ``<folder>/<name>.inter`` and, when present, ``<folder>/<name>.item`` (see :func:`read_atomic`)."""
    inter_path = folder / f"{name}.inter"
    columns = read_atomic(inter_path, fix, complete_lines)
    missing = [column for column in ("user_id", "item_id") if column not in columns]
    if missing:
        raise DatasetFileError(inter_path, f"no column(s) {missing} (has {list(columns)})", fix)
    rows = len(columns["user_id"])
    timestamps = (floats(inter_path, "timestamp", columns["timestamp"], fix) if "timestamp" in columns
                  else np.arange(rows, dtype=np.float64))
    ratings = floats(inter_path, "rating", columns["rating"], fix) if "rating" in columns else None
    item_path = folder / f"{name}.item"
    item_fields = _atomic_item_fields(item_path, fix, complete_lines) if item_path.exists() else {}
    return InteractionLog(name, columns["user_id"], columns["item_id"], timestamps, ratings, item_fields,
                          str(item_path))


def _atomic_item_fields(path: Path, fix: str, complete_lines: bool) -> dict[str, dict[str, str]]:
    columns = read_atomic(path, fix, complete_lines)
    if "item_id" not in columns:
        raise DatasetFileError(path, f"no column 'item_id' (has {list(columns)})", fix)
    ids = columns.pop("item_id")
    return {name: dict(zip(ids, values, strict=True)) for name, values in columns.items()}


def read_amazon(reviews_path: Path, meta_path: Path, name: str) -> InteractionLog:
    """Read an Amazon 2014 5-core review file and the metadata of the items it mentions."""
    users, items, ratings, timestamps, lines = [], [], [], [], []
    fix = f"download it again from {AMAZON_URL}{reviews_path.name}"
    with open_text(reviews_path, fix) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                review = json.loads(line)
                users.append(review["reviewerID"])
                items.append(review["asin"])
                ratings.append(float(review["overall"]))
                timestamps.append(float(review["unixReviewTime"]))
                lines.append(number)
            except (ValueError, KeyError, TypeError) as error:
                raise DatasetFileError(reviews_path, f"line {number} is not a review record with reviewerID, "
                                       f"asin, overall and unixReviewTime ({error!r})", fix) from None
    timestamps, ratings = np.array(timestamps, dtype=np.float64), np.array(ratings, dtype=np.float64)
    finite(reviews_path, "unixReviewTime", timestamps, fix, lines=lines)
    finite(reviews_path, "overall", ratings, fix, lines=lines)
    meta = _amazon_meta(meta_path, set(items))
    return InteractionLog(name, users, items, timestamps, ratings, meta, str(meta_path))


def _amazon_meta(path: Path, wanted: set[str]) -> dict[str, dict[str, str]]:
    fields: dict[str, dict[str, str]] = {"title": {}, "brand": {}, "categories": {}, "description": {}}
    fix = f"download it again from {AMAZON_URL}{path.name}"
    with open_text(path, fix) as handle:
        for number, line in enumerate(handle, start=1):
            found = _AMAZON_ASIN.search(line)
            if not line.strip() or (found is not None and found[1] not in wanted):
                continue
            try:
                record = ast.literal_eval(line)
                asin = record["asin"]
            except (ValueError, SyntaxError, KeyError, TypeError, IndexError, MemoryError, RecursionError) as error:
                raise DatasetFileError(path, f"line {number} is not a Python dict literal with an 'asin' "
                                       f"({error!r})", fix) from None
            if asin in wanted:
                for key, value in _amazon_item_fields(record).items():
                    fields[key][asin] = value
    return fields


def _amazon_item_fields(record: dict) -> dict[str, str]:
    paths = [path if isinstance(path, list) else [path] for path in record.get("categories") or []]
    categories = dict.fromkeys(clean_text(str(name)) for path in paths for name in path)
    return {
        "title": clean_text(str(record.get("title", ""))),
        "brand": clean_text(str(record.get("brand", ""))),
        "categories": ", ".join(name for name in categories if name),
        "description": clean_text(str(record.get("description", "")), max_words=_DESCRIPTION_WORDS),
    }


def read_recai(folder: Path, name: str) -> InteractionLog:
    """Read RecAI's ``sequential_data.txt`` (timestamps 0..n-1 per user) and ``metadata.json``."""
    fix = "RecAI's preprocessing writes metadata.json and sequential_data.txt into one folder; regenerate them"
    users, items, timestamps = [], [], []
    with open_text(folder / "sequential_data.txt", fix) as handle:
        for line in handle:
            if not line.strip():
                continue
            user, *sequence = line.split()
            users += [user] * len(sequence)
            items += sequence
            timestamps += range(len(sequence))
    titles = _recai_titles(folder / "metadata.json", fix)
    return InteractionLog(name, users, items, np.array(timestamps, dtype=np.float64), None,
                          {"title": {item: titles[item] for item in set(items) if item in titles}},
                          str(folder / "metadata.json"))


def _recai_titles(path: Path, fix: str) -> dict[str, str]:
    """Item id (line number from 1, as a string) -> title."""
    titles = {}
    with open_text(path, fix) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DatasetFileError(path, f"line {number} is not JSON ({error})", fix) from None
            if not isinstance(record, dict):
                raise DatasetFileError(path, f"line {number} is not a JSON object", fix)
            title = next((record[key] for key in RECAI_TITLE_FIELDS if record.get(key)), "")
            titles[str(number)] = clean_text(str(title))
    return titles


def _is_float(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True
