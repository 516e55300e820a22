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
coverage. Each run is ``train_content`` itself (``genrec/trainers/content_trainer.py``); the described
run only adds the gin switch ``experiment.item_text = "augmented:<cache path>"`` (and
``experiment.missing_descriptions = "empty"`` with ``--allow-missing``), which any content preset takes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import gin  # noqa: E402

from genrec.augment import cache_path  # noqa: E402
from genrec.config import parse_gin  # noqa: E402
from genrec.llm import BUNDLED_LLM  # noqa: E402
from genrec.models.content import ContentRecommender  # noqa: E402
from genrec.progress import quiet_library_bars  # noqa: E402
from genrec.trainers.content_trainer import train_content  # noqa: E402

KEYS = {"full": ("ndcg@10", "recall@10", "mrr@10", "ndcg@20", "recall@20"),
        "impressions": ("auc", "mrr", "ndcg@5", "ndcg@10", "gauc")}  # test metrics reported, per protocol


def run_variant(config: str, bindings: list[str], run_dir: Path) -> tuple[dict, list[str]]:
    """``train_content`` on the preset with extra gin bindings; returns its metrics and the item texts it trained on."""
    parse_gin([config], [*bindings, f"train_content.run_dir = {str(run_dir)!r}"])
    metrics = train_content()
    return metrics, ContentRecommender.from_pretrained(run_dir / "model").texts


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
    quiet_library_bars()  # no weight-loading bars in a redirected log

    os.chdir(REPO)
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="augment-benchmark-"))
    bindings = [f"AttentionContent.max_tokens = {args.max_tokens}", *args.gin]
    parse_gin([args.config], bindings)
    dataset = gin.query_parameter("experiment.dataset")
    path = cache_path(dataset, args.model, max_new_tokens=args.max_new_tokens)
    described = [f"experiment.item_text = {'augmented:' + str(path)!r}"]
    if args.allow_missing:
        described.append("experiment.missing_descriptions = 'empty'")

    results, runs = {}, {}
    for name, extra in (("with", described), ("without", [])):  # "with" first: a missing cache fails fast
        metrics, texts = run_variant(args.config, bindings + extra, run_dir / name)
        keys = KEYS.get(metrics.get("protocol"), KEYS["full"])
        results[name] = {**{k: round(metrics["test"][k], 4) for k in keys},
                         "valid_ndcg@10": round(metrics["valid"]["ndcg@10"], 4),
                         "train_seconds": metrics.get("train_seconds"), "epochs": metrics.get("epochs"),
                         "mean_text_words": round(sum(len(t.split()) for t in texts) / len(texts), 1)}
        runs[name] = metrics
    with_metrics, without_metrics = runs["with"], runs["without"]
    out = {"benchmark": "augment", "config": args.config, "dataset": dataset,
           "seed": without_metrics.get("seed"), "fingerprint": without_metrics.get("fingerprint"),
           "descriptions": str(path), "model": args.model, "item_text": with_metrics.get("item_text"),
           "items_described": with_metrics.get("items_described"), "num_items": with_metrics.get("num_items"),
           "max_tokens": args.max_tokens, "bindings": args.gin,
           "without": results["without"], "with": results["with"],
           "ndcg@10_gain": round(results["with"]["ndcg@10"] - results["without"]["ndcg@10"], 4)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
