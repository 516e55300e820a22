"""Command line for datasets: ``python -m genrec.data stats ml-100k [--min-rating 4] [--k-core 5] [--split loo]``.

``stats`` loads a dataset (fetching it on first use) and prints users, items, interactions,
density = interactions / (users * items), sequence-length quantiles (observed values, i.e.
``numpy.quantile(..., method="inverted_cdf")``), the split sizes (train interactions / valid rows /
test rows) and the dataset fingerprint.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from genrec.assets import AssetError
from genrec.data.datasets import load_dataset
from genrec.data.readers import DatasetFileError
from genrec.data.splits import SPLITS

QUANTILES = ((0.0, "min"), (0.25, "25%"), (0.5, "50%"), (0.75, "75%"), (0.9, "90%"), (1.0, "max"))


def stats(name: str, min_rating: float | None = None, k_core: int | None = None, split: str = "loo",
          root: str | None = None) -> list[tuple[str, str]]:
    """Summary statistics of a dataset as (label, value) rows."""
    started = time.perf_counter()
    interactions, _ = load_dataset(name, min_rating=min_rating, k_core=k_core, root=root)
    seconds = time.perf_counter() - started
    parts = interactions.split(split)
    lengths = np.array([len(sequence) for sequence in interactions.sequences])
    users, items, total = interactions.num_users, interactions.num_items, interactions.num_interactions
    quantiles = np.quantile(lengths, [q for q, _ in QUANTILES], method="inverted_cdf")
    length_text = " | ".join(f"{label} {value:,}" for (_, label), value in zip(QUANTILES, quantiles, strict=True))
    return [
        ("dataset", f"{name} (min_rating={min_rating}, k_core={k_core}; loaded in {seconds:.2f} s)"),
        ("users", f"{users:,}"),
        ("items", f"{items:,}"),
        ("interactions", f"{total:,}"),
        ("density", f"{total / (users * items):.4%}"),
        ("sequence length", length_text),
        (f"split {split}",
         f"train {sum(map(len, parts.train)):,} | valid {len(parts.valid):,} | test {len(parts.test):,}"),
        ("fingerprint", interactions.fingerprint()),
    ]


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m genrec.data`` and ``genrec-data``."""
    parser = argparse.ArgumentParser(prog="python -m genrec.data", description="Inspect genrec datasets.")
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("stats", help="print dataset statistics")
    command.add_argument("name", help="ml-100k, ml-1m, amazon:<folder or Category>, recai:<folder>, recbole:<folder>")
    command.add_argument("--min-rating", type=float, help="keep interactions with rating >= this")
    command.add_argument("--k-core", type=int, help="iteratively drop users and items with fewer interactions")
    command.add_argument("--split", default="loo", choices=sorted(SPLITS), help="split to report (default loo)")
    command.add_argument("--root", help="data folder (default: $GENREC_DATA_DIR, <checkout>/data or ~/.cache/genrec)")
    args = parser.parse_args(argv)
    try:
        rows = stats(args.name, args.min_rating, args.k_core, args.split, args.root)
    except (ValueError, DatasetFileError, AssetError) as error:
        parser.exit(1, f"error: {error}\n")
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
