"""A content-based preset with and without LLM-written item descriptions; prints one JSON line.

    python -m genrec.augment --dataset ml-100k                  # first: describe every item (resumable)
    python benchmarks/augment.py [--config config/content/ml100k/nrms.gin] [--gin "k = v"]...

The same preset is trained twice with the same seed, data, split and evaluators; only the item text
differs: the catalogue text (``"Kolya (1996). Genres: Comedy."``), then the same text plus the
``description`` field that :mod:`genrec.augment` wrote with the bundled SmolLM2-135M-Instruct
(``"... Description: Kolya (1996) is a comedy-drama film about ..."``). Texts with a description
are about three times longer, so both runs keep up to ``--max-tokens`` (default 96) tokens per item
(``AttentionContent.max_tokens``; ``nrms.gin`` keeps 32, which would cut the description off).

By default every item must have a description (the benchmark refuses a partial cache, which would
compare two different things); ``--allow-missing`` runs anyway, for a smoke test, and records the
coverage. Each run is ``train_content`` itself (``genrec/trainers/content_trainer.py``), with the
catalogue that its ``experiment()`` returns swapped for the described one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from genrec.augment import cache_path, with_descriptions  # noqa: E402
from genrec.config import parse_gin  # noqa: E402
from genrec.llm import BUNDLED_LLM  # noqa: E402
from genrec.trainers import content_trainer  # noqa: E402

KEYS = ("ndcg@10", "recall@10", "mrr@10", "ndcg@20", "recall@20")


def run_variant(config: str, bindings: list[str], run_dir: Path, describe) -> tuple[dict, object]:
    """``train_content`` on the preset, with ``describe(exp)`` (``None``: no change) as the catalogue.

    The trainer's ``experiment`` is wrapped, not replaced: the real one still loads the data and
    consumes its gin bindings; only the returned catalogue is swapped.
    """
    parse_gin([config], [*bindings, f"train_content.run_dir = {str(run_dir)!r}"])
    real = content_trainer.experiment
    seen = {}

    def experiment_with_descriptions():
        exp = real()
        if describe is not None:
            exp = dataclasses.replace(exp, catalog=describe(exp))
        seen["exp"] = exp
        return exp

    content_trainer.experiment = experiment_with_descriptions
    try:
        metrics = content_trainer.train_content()
    finally:
        content_trainer.experiment = real
    return metrics, seen["exp"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/content/ml100k/nrms.gin")
    parser.add_argument("--model", default=BUNDLED_LLM, help="the LLM that wrote the descriptions")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="as given to genrec.augment")
    parser.add_argument("--max-tokens", type=int, default=96, help="AttentionContent.max_tokens for both runs")
    parser.add_argument("--gin", action="append", default=[], help="extra binding (repeatable)")
    parser.add_argument("--allow-missing", action="store_true", help="run with a partial description cache")
    parser.add_argument("--run-dir", default=None, help="default: a fresh temporary folder")
    args = parser.parse_args()

    os.chdir(REPO)
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="augment-benchmark-"))
    bindings = [f"AttentionContent.max_tokens = {args.max_tokens}", *args.gin]
    found = {}

    def describe(exp):
        found["path"] = cache_path(exp.info["dataset"], args.model, max_new_tokens=args.max_new_tokens)
        return with_descriptions(exp.catalog, found["path"], require_all=not args.allow_missing)

    results, exps = {}, {}
    for name, transform in (("with", describe), ("without", None)):  # "with" first: a missing cache fails fast
        metrics, exps[name] = run_variant(args.config, bindings, run_dir / name, transform)
        catalog = exps[name].catalog
        results[name] = {**{k: round(metrics["test"][k], 4) for k in KEYS},
                         "valid_ndcg@10": round(metrics["valid"]["ndcg@10"], 4),
                         "train_seconds": metrics.get("train_seconds"), "epochs": metrics.get("epochs"),
                         "mean_text_words": round(sum(len(t.split()) for t in catalog.texts()) / catalog.num_items, 1)}
    described = exps["with"].catalog
    out = {"benchmark": "augment", "config": args.config, "dataset": exps["with"].info["dataset"],
           "seed": metrics.get("seed"), "fingerprint": exps["with"].info["fingerprint"],
           "descriptions": str(found["path"]), "model": args.model,
           "items_described": sum(bool(text) for text in described.fields["description"][1:]),
           "num_items": described.num_items, "max_tokens": args.max_tokens, "bindings": args.gin,
           "without": results["without"], "with": results["with"],
           "ndcg@10_gain": round(results["with"]["ndcg@10"] - results["without"]["ndcg@10"], 4)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
