"""Soft-token LLM recommender (CLLM4Rec-style): frozen vs LoRA vs full fine-tuning vs our SASRec.

    python benchmarks/cllm4rec.py [--steps 40] [--eval-rows 300] [--variants frozen lora full sasrec]

Every variant runs on ml-100k, leave-one-out, through its real trainer, evaluated on the same rows
(``experiment.eval_rows``: a fixed sample of users, identical for every variant; ``--eval-rows 0``
evaluates all 943) under both protocols side by side: full ranking over the 1,682 items (history not
masked, as for every genrec model) and sampled (1 positive + 100 negatives, seed 0). Prints one JSON
line with test metrics, the best validation step and wall times per variant.

The CLLM4Rec variants share ``config/cllm4rec/ml100k_debug.gin`` (bundled SmolLM2-135M, d_rec 128,
histories of ``--max-history`` items, batch ``--batch-size``) and differ in ``CLLM4Rec.tuning`` and the
learning rate (frozen: tables and projections only at 3e-3; LoRA r 8, alpha 16 on every linear layer at 1e-3;
full fine-tuning at 3e-4, since the LLM and the tables share one learning rate in ``fit``), each for
``--steps`` optimizer steps with one validation at the end. SASRec runs its debug recipe
(``config/sasrec/ml100k_debug.gin``, 10 epochs); ``popular`` is the most-popular baseline on the
same rows. On a CPU these are short budgets: the figures
compare the variants at equal steps, not converged models.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from genrec.config import parse_gin  # noqa: E402
from genrec.models import MostPopular  # noqa: E402
from genrec.progress import quiet_library_bars  # noqa: E402
from genrec.trainers.cllm4rec_trainer import train_cllm4rec  # noqa: E402
from genrec.trainers.sasrec_trainer import train_sasrec  # noqa: E402
from genrec.training import experiment  # noqa: E402

LEARNING_RATES = {"frozen": 3e-3, "lora": 1e-3, "full": 3e-4}
LORA = ["lora_settings.alpha = 16", "lora_settings.target_modules = 'all-linear'"]  # the measured LoRA variant
KEYS = ("ndcg@10", "recall@10", "ndcg@20", "recall@20")
SAMPLED_KEYS = ("hit@1", "hit@5", "hit@10", "hit@20", "ndcg@1", "ndcg@5", "ndcg@10", "ndcg@20")


def most_popular(args: argparse.Namespace) -> dict:
    """The training-count baseline on the same rows and protocols (no training)."""
    parse_gin([], [f"experiment.eval_rows = {args.eval_rows or None}", "experiment.extra_protocols = ['sampled']"])
    exp = experiment()
    pop = MostPopular(exp.split.train, exp.num_items)
    test = exp.evaluate_scores(lambda model, users, histories: pop.score(histories))(None, "test", None)
    return {"full": {k: round(test[k], 4) for k in KEYS},
            "sampled": {k: round(test["sampled"][k], 4) for k in SAMPLED_KEYS}}


def run_variant(name: str, args: argparse.Namespace, root: Path) -> dict:
    if name == "popular":
        return most_popular(args)
    run_dir = str(root / name)
    rows = [f"experiment.eval_rows = {args.eval_rows or None}"]  # the debug configs bind a sample of 100
    shared = [*rows, "experiment.extra_protocols = ['sampled']", f"{'train_sasrec' if name == 'sasrec' else 'train_cllm4rec'}"
              f".run_dir = {run_dir!r}"]
    if name == "sasrec":
        bindings = shared
        parse_gin(["config/sasrec/ml100k_debug.gin"], bindings)
        train = train_sasrec
    else:
        bindings = [*shared, f"CLLM4Rec.tuning = {name!r}", f"CLLM4Rec.max_history = {args.max_history}",
                    *(LORA if name == "lora" else []),
                    f"fit.learning_rate = {LEARNING_RATES[name]}", f"fit.max_steps = {args.steps}",
                    f"fit.batch_size = {args.batch_size}", "fit.eval_every_steps = None", "fit.max_epochs = 1"]
        parse_gin(["config/cllm4rec/ml100k_debug.gin"], bindings)
        train = train_cllm4rec
    start = time.perf_counter()
    metrics = train()
    wall = time.perf_counter() - start
    test = metrics["test"]
    return {
        "full": {k: round(test[k], 4) for k in KEYS},
        "sampled": {k: round(test["sampled"][k], 4) for k in SAMPLED_KEYS},
        "valid_ndcg@10": round(metrics["valid"]["ndcg@10"], 4),
        "steps": metrics["steps"], "best_step": metrics["best_step"],
        "trainable_parameters": metrics.get("trainable_parameters"),
        "train_seconds": metrics["train_seconds"], "eval_seconds": metrics["eval_seconds"],
        "test_seconds": metrics["test_seconds"], "wall_seconds": round(wall, 1), "peak_rss_mib": metrics["peak_rss_mib"],
        "bindings": bindings,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["frozen", "lora", "full", "sasrec", "popular"],
                        choices=["frozen", "lora", "full", "sasrec", "popular"])
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per CLLM4Rec variant")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-history", type=int, default=10, help="history items in the soft-token sequence")
    parser.add_argument("--eval-rows", type=int, default=300, help="users evaluated (valid and test); 0: all 943")
    parser.add_argument("--run-dir", default=None, help="default: a fresh temporary folder")
    args = parser.parse_args()
    quiet_library_bars()  # no weight-loading bars in a redirected log

    os.chdir(REPO)
    root = Path(args.run_dir or tempfile.mkdtemp(prefix="cllm4rec-bench-"))
    out = {"benchmark": "cllm4rec", "dataset": "ml-100k", "split": "loo", "protocols": ["full", "sampled"],
           "eval_rows": args.eval_rows or "all", "steps": args.steps, "batch_size": args.batch_size,
           "max_history": args.max_history, "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None, "results": {}}
    for name in args.variants:
        out["results"][name] = run_variant(name, args, root)
        print(json.dumps({name: out["results"][name]}), file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
