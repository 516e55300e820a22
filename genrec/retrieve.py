"""Answer a text query with catalogue items from a retrieval encoder (RecLM-emb), from the command line.

    python -m genrec.retrieve "a funny animated movie from the 1990s" --model runs/retrieval/ml100k/model
    python -m genrec.retrieve "Toy Stroy" --model bundled:all-minilm-l6-v2 --k 5 --index hnsw

``--model`` takes a folder written by the retrieval trainer (``<run dir>/model``) or any encoder
spec, used frozen. Prints one line per item: rank, score, raw item id and item text.
"""

from __future__ import annotations

import argparse
import sys

from genrec.retrieval.index import INDEX_KINDS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genrec.retrieve", description=__doc__.splitlines()[0])
    parser.add_argument("query", nargs="+", help="the query text (several: one answer block each)")
    parser.add_argument("--model", default="runs/retrieval/ml100k/model",
                        help="trained model folder or encoder spec (default: %(default)s)")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--index", choices=INDEX_KINDS, default="flat")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args(argv)
    import torch

    from genrec.data import load_dataset
    from genrec.retrieval.service import ItemRetriever, load_encoder

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        _, catalog = load_dataset(args.dataset)
        if not 1 <= args.k <= catalog.num_items:
            raise ValueError(f"--k must be in 1..{catalog.num_items}, got {args.k}")
        retriever = ItemRetriever(load_encoder(args.model), catalog, index_kind=args.index)
        items, scores = retriever.search(args.query, args.k)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for text, row, row_scores in zip(args.query, items.tolist(), scores.tolist()):
        print(f"query: {text}")
        for rank, (item, score) in enumerate(zip(row, row_scores), 1):
            if item > 0:
                print(f"{rank:3d}  {score:.3f}  {catalog.item_ids[item]}  {catalog.text(item)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
