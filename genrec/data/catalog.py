"""Item text: the catalogue of item fields aligned with the item indices, and text cleaning.

An :class:`ItemCatalog` holds one list of strings per field (``title``, ``year``, ``genres``,
``brand``, ...), aligned with ``Interactions.item_ids`` (index 0 is padding, ``""``). It renders
one line per item for text encoders and prompts:

    ``<title> (<year>). <Field>: <value>. <Field>: <value>.``

The title comes first (with the year in parentheses when there is a ``year`` field), then every
other non-empty field in insertion order, labelled with its name (``genres`` -> ``Genres``). An
item whose fields are all empty is rendered as its raw id, so a text is never empty; what feeds
item text to a model (text embeddings for semantic IDs, the content and LC-Rec encoders) asks for
``texts(require_text=True)`` instead, which refuses such an item with an error naming it and the
file its text should come from (:attr:`ItemCatalog.source`).
:meth:`ItemCatalog.with_field` adds a field from a raw id -> text mapping (e.g. the LLM-written
descriptions of :mod:`genrec.augment`).

The cleaning helpers fix what the raw data gets wrong: MovieLens moves leading articles to the
end (``"Butcher Boy, The"``), Amazon descriptions carry HTML entities and runs of whitespace.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass

PAD = "[PAD]"

# Articles MovieLens moves behind the title, checked on ml-100k and ml-1m titles (English,
# French, Italian, German, Spanish, Swedish, Portuguese); "L'" glues to the next word.
_ARTICLES = ("The", "A", "An", "La", "Le", "Les", "L'", "Il", "I", "Der", "Die", "Das", "Det", "El", "O")
_TRAILING_ARTICLE = re.compile(r"^(?P<title>.+), (?P<article>" + "|".join(map(re.escape, _ARTICLES)) + r")$")
_PARENTHESES = re.compile(r"^(?P<main>.*?)(?P<alternates>(?: \([^()]*\))*)$")


@dataclass(frozen=True, eq=False)
class ItemCatalog:
    """Text fields of the items, aligned with ``Interactions.item_ids``.

    Attributes:
        item_ids: Raw item id per item index; ``item_ids[0]`` is the padding ``"[PAD]"``.
        fields: Field name -> one string per item index (``""`` for padding and missing values).
        source: Where the item text was read from (a file, for messages); ``""`` when unknown.
    """

    item_ids: list[str]
    fields: dict[str, list[str]]
    source: str = ""

    def __post_init__(self):
        if not self.item_ids or self.item_ids[0] != PAD:
            raise ValueError(f"item_ids[0] must be the padding id {PAD!r}")
        for field, values in self.fields.items():
            if len(values) != len(self.item_ids):
                raise ValueError(f"field {field!r} has {len(values)} values for {len(self.item_ids)} item ids")

    @property
    def num_items(self) -> int:
        """Number of real items N (padding excluded)."""
        return len(self.item_ids) - 1

    def text(self, item: int) -> str:
        """One line describing item index ``item`` (1..N), e.g. ``"Toy Story (1995). Genres: Comedy."``."""
        if not 1 <= item <= self.num_items:
            raise IndexError(f"item index {item} is out of range 1..{self.num_items} (0 is padding)")
        values = {field: column[item] for field, column in self.fields.items()}
        title = values.pop("title", "")
        year = values.pop("year", "")
        parts = [f"{title} ({year})" if title and year else title or year]
        parts += [f"{field.replace('_', ' ').capitalize()}: {value}" for field, value in values.items() if value]
        parts = [part for part in parts if part]
        if not parts:
            return self.item_ids[item]
        return " ".join(part if part[-1] in ".!?" else part + "." for part in parts)

    def with_field(self, name: str, values: Mapping[str, str]) -> ItemCatalog:
        """A copy with field ``name`` set from raw item id -> text (``""`` for ids not in ``values``).

        A new field is rendered last by :meth:`text`; an existing one is replaced in place. E.g.
        ``catalog.with_field("description", {"1": "A toy cowboy ..."})`` adds
        ``"Description: A toy cowboy ..."`` to item ``"1"``'s text.

        Raises:
            ValueError: if ``values`` names ids that are not items of the catalogue.
        """
        unknown = values.keys() - set(self.item_ids[1:])
        if unknown:
            raise ValueError(f"field {name!r} has values for {len(unknown)} ids that are not catalogue items "
                             f"(e.g. {sorted(unknown)[:3]})")
        column = [""] + [values.get(item, "") for item in self.item_ids[1:]]
        return ItemCatalog(list(self.item_ids), {**self.fields, name: column}, self.source)

    def texts(self, require_text: bool = False) -> list[str]:
        """Texts of items 1..N; entry ``i - 1`` describes item ``i``.

        Args:
            require_text: raise ValueError (naming the item and :attr:`source`) for an item whose
                fields are all empty, instead of rendering it as its raw id.
        """
        if require_text:
            empty = [item for item in range(1, len(self.item_ids))
                     if not any(column[item].strip() for column in self.fields.values())]
            if empty:
                raw = self.item_ids[empty[0]]
                where = self.source or "the dataset's item file"
                fields = ", ".join(self.fields) or "none"
                raise ValueError(f"item {raw!r} (and {len(empty) - 1} more) has no text: its fields ({fields}) are "
                                 f"empty or missing in {where}; give every item a title or description there (or "
                                 "drop those items) before building text embeddings, semantic IDs or LLM prompts")
        return [self.text(item) for item in range(1, len(self.item_ids))]


def restore_article(title: str) -> str:
    """Move a trailing article back to the front, in the title and in each parenthesised alternate.

    ``"Butcher Boy, The"`` -> ``"The Butcher Boy"``;
    ``"Thieves (Voleurs, Les)"`` -> ``"Thieves (Les Voleurs)"``; ``"Enfer, L'"`` -> ``"L'Enfer"``.
    """
    parts = _PARENTHESES.match(title)
    alternates = re.findall(r" \(([^()]*)\)", parts["alternates"])
    return _front_article(parts["main"]) + "".join(f" ({_front_article(alt)})" for alt in alternates)


def _front_article(text: str) -> str:
    match = _TRAILING_ARTICLE.match(text)
    if match is None:
        return text
    separator = "" if match["article"].endswith("'") else " "
    return f"{match['article']}{separator}{match['title']}"


def clean_text(text: str, max_words: int | None = None) -> str:
    """Unescape HTML entities, drop tags, collapse whitespace; keep ``max_words`` words (``...`` marks a cut)."""
    words = re.sub(r"<[^>]+>", " ", html.unescape(text)).split()
    if max_words is not None and len(words) > max_words:
        return " ".join(words[:max_words]) + " ..."
    return " ".join(words)
