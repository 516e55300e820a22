"""Datasets as time-ordered user sequences (:class:`Interactions`) plus item text (:class:`ItemCatalog`).

    >>> from genrec.data import load_dataset
    >>> interactions, catalog = load_dataset("ml-100k")          # fetched once, then cached
    >>> split = interactions.split("loo", max_history=50)
    >>> catalog.text(interactions.item_index("1"))             # raw MovieLens id "1"
    "Toy Story (1995). Genres: Animation, Children's, Comedy."

Each user's interactions are sorted by timestamp with a **stable** sort over file order, so
interactions in the same second keep their file order (ml-100k: 415 of 943 users have their last
two interactions in the same second, which decides the leave-one-out test item). Items are
numbered 1..N in order of first appearance in the interaction file after filtering (0 is
padding), users 0..U-1 likewise. See :mod:`genrec.data.datasets` for names and schemes,
:mod:`genrec.data.readers` for the file formats, :mod:`genrec.data.splits` for the splits.
``python -m genrec.data stats ml-100k`` prints summary statistics.
:mod:`genrec.data.mind` reads MIND news and impressions (:func:`read_mind`). Training examples are cut
in :mod:`genrec.data.windows` (next-item windows, history examples) and batches padded in
:mod:`genrec.data.padding`.
"""

from genrec.data.catalog import ItemCatalog
from genrec.data.datasets import DATASETS, SCHEMES, load_catalog, load_dataset
from genrec.data.interactions import Interactions
from genrec.data.mind import MindBehaviors, MindNews, read_mind
from genrec.data.readers import DatasetFileError
from genrec.data.splits import SPLITS, EvalSet, Split

__all__ = ["DATASETS", "SCHEMES", "SPLITS", "DatasetFileError", "EvalSet", "Interactions", "ItemCatalog",
           "MindBehaviors", "MindNews", "Split", "load_catalog", "load_dataset", "read_mind"]
