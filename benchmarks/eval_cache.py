"""Times one full-ranking evaluation of a content model with and without the evaluation cache.

    python benchmarks/eval_cache.py [--config config/content/ml100k/llm_nrms.gin] [--which test]
        [--train-steps 10] [--gin BINDING]... [--out runs/benchmarks/eval_cache.json]

Both sides run in this process on the same weights and the same evaluation rows (the shared
evaluator, full ranking over every item, history masked as the preset says), one after the other:

* **cached** (``ContentRecommender.eval_cache = True``, what the trainer uses): the item table is
  dropped first, then every item is encoded once, in batches, in inference mode; for the language-model
  operator only its trained top layers run, on the frozen layers' outputs read from the on-disk layer
  cache (built before timing, when the model is constructed; its build time is reported separately);
  user vectors come from the table.
* **uncached** (``eval_cache = False``, a naive implementation): for every evaluation batch of users
  (``experiment.eval_batch_size``, 256), each user's history items are encoded for that user (no
  sharing between users) and the whole catalogue is encoded again as candidates, and the language model
  runs every layer (frozen ones included) on every call.

Before timing, the model takes ``--train-steps`` optimizer steps (AdamW, the preset's learning rate
and batch size) so that scores come from trained, not initial, weights; timings do not depend on it.
Prints one JSON line: both wall times, ``speedup`` (uncached / cached), whether the metrics are
identical, the largest absolute score difference on the first batch, and the machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gin  # noqa: E402
import torch  # noqa: E402

from genrec.config import parse_gin  # noqa: E402
from genrec.data.windows import history_examples  # noqa: E402
from genrec.models.content import ContentRecommender  # noqa: E402
from genrec.training import experiment, seed_everything  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/content/ml100k/llm_nrms.gin")
    parser.add_argument("--which", default="test", choices=["valid", "test"])
    parser.add_argument("--train-steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--gin", action="append", default=[], help="extra binding (repeatable)")
    parser.add_argument("--out", default="runs/benchmarks/eval_cache.json")
    args = parser.parse_args(argv)

    import genrec.trainers.content_trainer  # noqa: F401  registers train_content for the preset

    parse_gin([args.config], args.gin)
    seed_everything(args.seed)
    exp = experiment()
    t0 = time.perf_counter()
    model = ContentRecommender(texts=exp.catalog.texts())
    build_seconds = time.perf_counter() - t0
    lr = gin.query_parameter("fit.learning_rate") if _bound("fit.learning_rate") else 1e-3
    batch = gin.query_parameter("fit.batch_size") if _bound("fit.batch_size") else 64
    if args.train_steps:
        examples = history_examples(exp.split.train, model.max_history)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
        generator = torch.Generator().manual_seed(args.seed)
        model.train()
        for _ in range(args.train_steps):
            rows = torch.randint(0, len(examples), (batch,), generator=generator).tolist()
            _, loss = model(**examples.__getitems__(rows))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    model.eval()
    evaluator = exp.evaluators[args.which]
    results, first_batch = {}, {}

    def score(name):
        def fn(users, histories):
            scores = model.score(histories)
            first_batch.setdefault(name, scores.clone())  # kept for the score comparison below
            return scores
        return fn

    with torch.inference_mode():
        for name, cached in (("cached", True), ("uncached", False)):
            model.eval_cache = cached
            model.invalidate_cache()
            start = time.perf_counter()
            metrics = evaluator(score(name))
            results[name] = {"seconds": round(time.perf_counter() - start, 2), "metrics": metrics}
        model.eval_cache = True
    cached_scores, naive_scores = first_batch["cached"], first_batch["uncached"]
    finite = torch.isfinite(cached_scores)
    encoder = model.item_encoder
    out = {
        "benchmark": "eval_cache",
        "config": args.config,
        "bindings": args.gin,
        "dataset": exp.info["dataset"],
        "which": args.which,
        "rows": len(evaluator),
        "items": exp.num_items,
        "eval_batch_size": evaluator.batch_size,
        "max_history": model.max_history,
        "item_encoder": type(encoder).__name__,
        "lm": getattr(encoder, "path", None),
        "frozen_layers": getattr(encoder, "frozen_layers", None),
        "num_layers": getattr(encoder, "num_layers", None),
        "train_steps": args.train_steps,
        "cached_seconds": results["cached"]["seconds"],
        "uncached_seconds": results["uncached"]["seconds"],
        "speedup": round(results["uncached"]["seconds"] / max(results["cached"]["seconds"], 1e-9), 1),
        "metrics_identical": results["cached"]["metrics"] == results["uncached"]["metrics"],
        "max_abs_score_diff_first_batch": float((cached_scores[finite] - naive_scores[finite]).abs().max()),
        "ndcg@10": {name: round(r["metrics"]["ndcg@10"], 5) for name, r in results.items()},
        "model_build_seconds_incl_layer_cache": round(build_seconds, 2),
        "layer_cache_file": str(getattr(encoder, "cache_path", None) or ""),
        "torch_threads": torch.get_num_threads(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({**out, "metrics": {k: r["metrics"] for k, r in results.items()}}, indent=2))
    print(json.dumps(out))
    return out


def _bound(name: str) -> bool:
    try:
        gin.query_parameter(name)
        return True
    except ValueError:
        return False


if __name__ == "__main__":
    main()
