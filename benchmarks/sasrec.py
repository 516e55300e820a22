"""SASRec (ours) under RecBole 1.2.1's protocol and hyperparameters; prints one JSON line.

    python benchmarks/sasrec.py --dataset ml-100k

Protocol (identical to the peer run): leave-one-out by timestamp (valid = second-last, test = last),
full ranking over all items, history items not masked, CE loss, max length 50, hidden 64, inner 256,
GELU, 2 layers, 2 heads, dropout 0.2/0.2, lr 0.001, early stopping on valid NDCG@10 with patience 10,
seed 2020 (config/sasrec/<dataset>.gin). Training samples differ on purpose: RecBole feeds every
prefix and takes one loss per prefix; we take a loss at every position of all-position windows
(genrec.data.windows).

The peer figures are RecBole 1.2.1's SASRec run on a machine of this kind (2 CPU cores, torch 2.13.0)
as recorded in issue #2; RecBole is not installed by this script (its pinned dependencies conflict
with ours), so the time ratio is against that recorded run, not one measured in the same process.
The most-popular baseline is measured in the same run.
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

from genrec.config import parse_gin  # noqa: E402
from genrec.models import MostPopular  # noqa: E402
from genrec.trainers.sasrec_trainer import train_sasrec  # noqa: E402
from genrec.training import experiment  # noqa: E402

CONFIGS = {"ml-100k": "config/sasrec/ml100k.gin", "ml-1m": "config/sasrec/ml1m.gin"}
# RecBole 1.2.1 SASRec on ml-100k, same protocol and hyperparameters, 2 CPU cores, torch 2.13.0 (issue #2).
RECBOLE = {"ml-100k": {"ndcg@10": 0.0640, "recall@10": 0.1357, "mrr@10": 0.0425, "recall@5": 0.0785,
                       "recall@20": 0.2291, "ndcg@5": 0.0460, "ndcg@20": 0.0876, "best_valid_ndcg@10": 0.0719,
                       "epochs": 30, "train_seconds": 3237.0}}
KEYS = ("ndcg@10", "recall@10", "mrr@10", "recall@5", "recall@20", "ndcg@5", "ndcg@20")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(CONFIGS), default="ml-100k")
    parser.add_argument("--gin", action="append", default=[], help="extra binding (repeatable)")
    parser.add_argument("--run-dir", default=None, help="default: a fresh temporary folder")
    args = parser.parse_args()

    run_dir = args.run_dir or tempfile.mkdtemp(prefix=f"sasrec-{args.dataset}-")
    os.chdir(REPO)
    parse_gin([CONFIGS[args.dataset]], [f"train_sasrec.run_dir = {run_dir!r}", *args.gin])
    metrics = train_sasrec()

    parse_gin([], [f"experiment.dataset = {args.dataset!r}"])
    exp = experiment()
    pop = MostPopular(exp.split.train, exp.num_items)
    popular = exp.evaluators["test"](lambda users, histories: pop.score(histories))

    out = {
        "benchmark": "sasrec", "dataset": args.dataset, "split": metrics["split"], "protocol": metrics["protocol"],
        "seed": metrics["seed"], "fingerprint": metrics["fingerprint"],
        **{k: round(metrics["test"][k], 4) for k in KEYS},
        "valid_ndcg@10": round(metrics["valid"]["ndcg@10"], 4),
        "epochs": metrics["epochs"], "best_epoch": metrics["best_epoch"],
        "train_seconds": metrics["train_seconds"], "eval_seconds": metrics["eval_seconds"],
        "peak_rss_mib": metrics["peak_rss_mib"], "most_popular_ndcg@10": round(popular["ndcg@10"], 4),
        "bindings": args.gin,
    }
    peer = RECBOLE.get(args.dataset)
    if peer:
        out["recbole"] = peer
        out["ndcg@10_vs_recbole"] = round(metrics["test"]["ndcg@10"] / peer["ndcg@10"], 3)
        out["time_fraction_of_recbole"] = round(metrics["train_seconds"] / peer["train_seconds"], 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
