"""The agent's item table: a real SQL table (sqlite, in memory) built from the catalogue.

One row per item: ``id`` (item index 1..N), ``raw_id``, ``title``, ``year`` (integer or NULL) and
``genres`` (``", "``-joined). InteRecAgent (Huang et al., arXiv 2308.16505) answers item look-ups
and hard conditions with SQL over such a table; here every hard filter is one parameterised
``SELECT id FROM items WHERE id IN (<candidates>) AND <condition>``, so a filter can only keep or
drop candidates, never add one.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence

from genrec.data import ItemCatalog

__all__ = ["ItemTable"]


def _year(value: str) -> int | None:
    return int(value) if re.fullmatch(r"\d{4}", value or "") else None


class ItemTable:
    """The catalogue as an sqlite table with look-up and hard filters.

    Args:
        catalog: item fields (``title``, ``year``, ``genres`` when present).
    """

    def __init__(self, catalog: ItemCatalog):
        self.catalog = catalog
        self.db = sqlite3.connect(":memory:", check_same_thread=False)
        self.db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, raw_id TEXT, title TEXT, year INTEGER, "
                        "genres TEXT)")
        fields = catalog.fields
        rows = [(i, catalog.item_ids[i], fields.get("title", catalog.item_ids)[i] or catalog.item_ids[i],
                 _year(fields.get("year", [""] * (i + 1))[i]), fields.get("genres", [""] * (i + 1))[i])
                for i in range(1, catalog.num_items + 1)]
        self.db.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?)", rows)
        self.db.execute("CREATE INDEX items_title ON items (title)")
        self.genres = sorted({g for (value,) in self.db.execute("SELECT genres FROM items") for g in value.split(", ")
                              if g and g != "unknown"})
        years = [y for (y,) in self.db.execute("SELECT year FROM items WHERE year IS NOT NULL")]
        self.decades = [f"{d}s" for d in range(min(years) // 10 * 10, max(years) + 1, 10)] if years else []

    @property
    def num_items(self) -> int:
        return self.catalog.num_items

    def _where(self, candidates: Sequence[int], condition: str, params: tuple) -> list[int]:
        """The candidates (in their order) that satisfy ``condition``."""
        if not candidates:
            return []
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS cand (id INTEGER PRIMARY KEY)")
        self.db.execute("DELETE FROM cand")
        self.db.executemany("INSERT OR IGNORE INTO cand VALUES (?)", [(int(i),) for i in candidates])
        keep = {i for (i,) in self.db.execute(
            f"SELECT items.id FROM items JOIN cand ON items.id = cand.id WHERE {condition}", params)}
        return [i for i in candidates if i in keep]

    def filter_genre(self, candidates: Sequence[int], genre: str) -> list[int]:
        """Candidates whose genres include ``genre`` (exact genre name, case-insensitive)."""
        return self._where(candidates, "(', ' || lower(genres) || ', ') LIKE ?", (f"%, {genre.lower()}, %",))

    def filter_decade(self, candidates: Sequence[int], decade: str) -> list[int]:
        """Candidates released in ``decade`` (``"1990s"``)."""
        match = re.fullmatch(r"(\d{3})0s", decade)
        if not match:
            raise ValueError(f"decade {decade!r} must look like '1990s'")
        start = int(match[1]) * 10
        return self._where(candidates, "year BETWEEN ? AND ?", (start, start + 9))

    def filter_title(self, candidates: Sequence[int], text: str) -> list[int]:
        """Candidates whose title contains ``text`` (SQL ``LIKE``, case-insensitive for ASCII)."""
        escaped = text.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return self._where(candidates, "title LIKE ? ESCAPE '\\'", (f"%{escaped}%",))

    def lookup(self, text: str, limit: int = 5) -> list[int]:
        """Items whose title best matches ``text``: exact title first, then titles containing it, then
        titles containing every word of it; shorter titles first within each."""
        text = text.strip()
        if not text:
            return []
        words = [w for w in re.findall(r"[\w']+", text) if len(w) > 1]
        found: list[int] = []
        queries = [("lower(title) = lower(?)", (text,)), ("title LIKE ?", (f"%{text}%",))]
        if words:
            queries.append((" AND ".join(["title LIKE ?"] * len(words)), tuple(f"%{w}%" for w in words)))
        for condition, params in queries:
            for (i,) in self.db.execute(f"SELECT id FROM items WHERE {condition} ORDER BY length(title), id", params):
                if i not in found:
                    found.append(i)
        return found[:limit]

    def describe(self, item: int) -> str:
        """One line about an item: title, year and genres."""
        title, year, genres = self.db.execute("SELECT title, year, genres FROM items WHERE id = ?", (item,)).fetchone()
        return f"{title} ({year or 'year unknown'}; {genres or 'no genres'})"

    def title(self, item: int) -> str:
        return self.db.execute("SELECT title FROM items WHERE id = ?", (item,)).fetchone()[0]
