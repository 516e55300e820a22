"""Offline stand-ins for the texts LC-Rec had an LLM write: a user's preference and a search query.

LC-Rec's ``<Name>.user.json`` holds, per user, explicit preferences and vague intentions (a
user-related and an item-related query) that ``text-davinci-003`` wrote from the titles and
descriptions of the user's items. Those files cannot be fetched for our datasets, so the
``itemsearch`` and ``preferenceobtain`` tasks use texts derived from the catalogue fields the data
has, by fixed rules (no model, no randomness):

* **Facets** of an item (:func:`item_facets`): its tags (the ``genres`` or ``categories`` field split on
  "," or "|", without the tags that more than half of the catalogue carries, e.g. an Amazon
  category's root "Beauty"), its era (the decade of a four-digit ``year``), its ``brand``, and one
  title keyword (the longest title word of at least four letters that is not a stop word).
* **Preference** of a history (:func:`preference_text`): its (at most) three most frequent tags, ties
  broken by recency; the decade of more than half of its dated items; the brand of at least a third
  of its items; e.g. ``"The user prefers Drama, Comedy and Romance, mostly from the 1990s."``
* **Query** for a target item (:func:`item_query`): its first two tags, era, brand and title
  keyword, e.g. ``"something Crime and Film-Noir from the 1990s with 'Confidential' in the title"``
  (the templates quote it).

Both always return text: an item or history without facets falls back to titles.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from genrec.data import ItemCatalog

__all__ = ["ItemFacets", "item_facets", "item_query", "preference_text"]

TAG_FIELDS = ("genres", "categories")
"""Catalogue fields whose comma- or bar-separated values are item tags."""

_STOP = frozenset("the and for with from that this your into over under about edition version pack set of "
                  "a an in on to by".split())
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{3,}")
_YEAR = re.compile(r"\b(1[89]\d\d|20\d\d)\b")


@dataclass(frozen=True)
class ItemFacets:
    """Per item index (0 = padding, empty): tags, era (``"1990s"`` or ``""``), brand, title keyword, title."""

    tags: list[tuple[str, ...]]
    eras: list[str]
    brands: list[str]
    keywords: list[str]
    titles: list[str]


def _split_tags(value: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(tag.strip() for tag in re.split(r"[,|]", value) if tag.strip()))


def _keyword(title: str) -> str:
    words = [w for w in _WORD.findall(title) if w.lower() not in _STOP]
    return max(words, key=len) if words else ""


def item_facets(catalog: ItemCatalog) -> ItemFacets:
    """The facets of every item of ``catalog`` (see the module docstring)."""
    n = len(catalog.item_ids)
    empty = [""] * n
    titles = catalog.fields.get("title", empty)
    columns = [catalog.fields.get(field, empty) for field in TAG_FIELDS]
    raw_tags = [tuple(dict.fromkeys(tag for column in columns for tag in _split_tags(column[i]))) for i in range(n)]
    common = {tag for tag, count in Counter(t for tags in raw_tags[1:] for t in tags).items() if count > (n - 1) / 2}
    tags = [tuple(t for t in item if t not in common) for item in raw_tags]
    eras = []
    for value in catalog.fields.get("year", empty):
        found = _YEAR.search(value)
        eras.append(f"{found[1][:3]}0s" if found else "")
    brands = [b.strip() for b in catalog.fields.get("brand", empty)]
    return ItemFacets(tags, eras, brands, [_keyword(t) for t in titles], [t.strip() for t in titles])


def _and(words: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _title(facets: ItemFacets, item: int) -> str:
    return facets.titles[item] or f"item {item}"


def preference_text(facets: ItemFacets, history: Sequence[int]) -> str:
    """A one-sentence preference of a user with these items (indices, oldest first).

    Raises:
        ValueError: for an empty history.
    """
    history = [int(i) for i in history if int(i) > 0]
    if not history:
        raise ValueError("preference_text needs at least one history item")
    recency = {}
    for position, item in enumerate(history):
        for tag in facets.tags[item]:
            recency[tag] = position
    counts = Counter(tag for item in history for tag in facets.tags[item])
    top = sorted(counts, key=lambda tag: (-counts[tag], -recency[tag]))[:3]
    eras = Counter(facets.eras[i] for i in history if facets.eras[i])
    era = next((e for e, c in eras.most_common(1) if c * 2 > sum(eras.values())), "")
    brands = Counter(facets.brands[i] for i in history if facets.brands[i])
    brand = next((b for b, c in brands.most_common(1) if c * 3 >= len(history)), "")
    if not (top or era or brand):
        recent = ", ".join(f"\"{_title(facets, i)}\"" for i in history[-2:])
        return f"The user likes items such as {recent}."
    text = "The user prefers " + (_and(top) if top else "items")
    text += f", mostly from the {era}" if era else ""
    text += f", often by {brand}" if brand else ""
    return text + "."


def item_query(facets: ItemFacets, item: int) -> str:
    """A search query that the target ``item`` answers, from its facets."""
    tags, era, brand, keyword = facets.tags[item][:2], facets.eras[item], facets.brands[item], facets.keywords[item]
    if not (tags or era or brand or keyword):
        return _title(facets, item)
    text = f"something {_and(list(tags))}" if tags else "an item"
    text += f" from the {era}" if era else ""
    text += f" by {brand}" if brand else ""
    return text + (f" with '{keyword}' in the title" if keyword else "")
