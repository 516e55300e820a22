"""The Amazon review data 2014 categories, by the short names that ``--split`` takes.

McAuley et al.'s 2014 release (https://snap.stanford.edu/data/amazon/productGraph/categoryFiles/)
ships, per category, a 5-core review file ``reviews_<Category>_5.json.gz`` and a metadata file
``meta_<Category>.json.gz``. The generative-recommendation papers name the categories shortly
(TIGER: Beauty, Sports, Toys; LC-Rec: Instruments; phonism/genrec: ``--split beauty``), so every
category has one lower-case short name here; the file name (``Sports_and_Outdoors``) works too.

Nothing here reads a file: :mod:`genrec.data.datasets` resolves ``amazon:<name>`` with
:func:`category_file_name`, and :mod:`genrec.config` checks a ``--split`` with :func:`short_name`.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["AMAZON_CATEGORIES", "amazon_folder", "category_file_name", "expected_files", "short_name"]

AMAZON_CATEGORIES: dict[str, str] = {
    "beauty": "Beauty",
    "sports": "Sports_and_Outdoors",
    "toys": "Toys_and_Games",
    "instruments": "Musical_Instruments",
    "clothing": "Clothing_Shoes_and_Jewelry",
    "games": "Video_Games",
    "office": "Office_Products",
    "pets": "Pet_Supplies",
    "automotive": "Automotive",
    "grocery": "Grocery_and_Gourmet_Food",
    "garden": "Patio_Lawn_and_Garden",
    "baby": "Baby",
    "health": "Health_and_Personal_Care",
    "tools": "Tools_and_Home_Improvement",
    "phones": "Cell_Phones_and_Accessories",
    "home": "Home_and_Kitchen",
    "electronics": "Electronics",
    "music": "Digital_Music",
    "cds": "CDs_and_Vinyl",
    "movies": "Movies_and_TV",
    "video": "Amazon_Instant_Video",
    "kindle": "Kindle_Store",
    "apps": "Apps_for_Android",
    "books": "Books",
}
"""Short name -> the ``<Category>`` of the 2014 file names, for every 5-core category of the release."""


def short_name(name: str) -> str | None:
    """The short name of a category given by short name (lower case) or file name (any case); None if
    unknown. A capitalised name is a file name: ``Games`` is not ``games`` (``Video_Games``).

    >>> short_name("beauty"), short_name("Beauty"), short_name("musical_instruments"), short_name("loo")
    ('beauty', 'beauty', 'instruments', None)
    """
    if name in AMAZON_CATEGORIES:
        return name
    lowered = name.lower()
    return next((short for short, category in AMAZON_CATEGORIES.items() if category.lower() == lowered), None)


def category_file_name(name: str) -> str:
    """The ``<Category>`` of the file names for a short or file name (see :func:`short_name`); an
    unknown name is returned as given, so a category this table lacks works by its exact file name."""
    short = short_name(name)
    return AMAZON_CATEGORIES[short] if short is not None else name


def amazon_folder(root: Path) -> Path:
    """Where ``amazon:<category>`` reads: ``$GENREC_AMAZON_DIR`` when set (read on every call, so a
    model trainer and the RQ-VAE run it starts see the same folder), else ``<root>/raw/amazon``."""
    configured = os.environ.get("GENREC_AMAZON_DIR")
    return Path(configured).expanduser() if configured else root / "raw" / "amazon"


def expected_files(category: str, folder: Path) -> tuple[Path, Path]:
    """The review and metadata files of ``category`` (a ``<Category>`` file name) in ``folder``."""
    return folder / f"reviews_{category}_5.json.gz", folder / f"meta_{category}.json.gz"
