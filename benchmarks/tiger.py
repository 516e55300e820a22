"""TIGER next to SASRec and most-popular on MovieLens-100k, plus TIGER's item-identifier ablation; one JSON line.

    python benchmarks/tiger.py                          # TIGER (seed 2020), random/atomic IDs, SASRec, most-popular
    python benchmarks/tiger.py --seeds 2020 2021 2022   # TIGER over three seeds
    python benchmarks/tiger.py --no-ablation --no-sasrec

Every model sees the same data, split and users under the same protocol: ml-100k, leave-one-out by
time (valid = second-last item, test = last), full ranking over all 1,682 items, history items not
masked, all 943 users, model selection on valid NDCG@10, test reported once. Each trainer runs in a
child process (benchmarks/trainer_run.py) with its shipped config: ``config/tiger/ml100k.gin``
(``train_tiger.item_ids`` = ``semantic``, and for the ablation rows ``random``: the same code tuples
dealt to items at random, and ``atomic``: one token per item) and ``config/sasrec/ml100k.gin``
(seed 2020). The semantic IDs are ``runs/rqvae/ml100k/semantic_ids.json``, built first by the
TIGER trainer with ``config/rqvae/ml100k.gin`` when missing (that build is not in TIGER's time).

Reported per row: test NDCG@10 / Recall@10 / MRR@10, valid NDCG@10, ``train_seconds`` (the loop's
training time, validations excluded), ``wall_seconds`` (the whole child process, evaluations
included), epochs, and the load average before and after the run. The machine may be shared: the
load average and the torch thread count (``--threads``, passed to every child as OMP_NUM_THREADS;
with other work on the same cores, 1 thread is several times faster than 2) sit beside the timings.
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
sys.path.insert(0, str(REPO / "benchmarks"))

KEYS = ("ndcg@10", "recall@10", "mrr@10", "ndcg@5", "recall@20")


def _row(metrics: dict, wall: float, load_before: tuple, load_after: tuple) -> dict:
    row = {k: round(metrics["test"][k], 4) for k in KEYS if k in metrics["test"]}
    for k in ("valid_item_rate", "duplicate_rate"):
        if k in metrics["test"]:
            row[k] = metrics["test"][k]
    row.update({"valid_ndcg@10": round(metrics["valid"]["ndcg@10"], 4), "epochs": metrics["epochs"],
                "best_epoch": metrics["best_epoch"], "steps": metrics["steps"],
                "train_seconds": metrics["train_seconds"], "wall_seconds": round(wall, 1),
                "seed": metrics["seed"], "loadavg_before": [round(x, 2) for x in load_before],
                "loadavg_after": [round(x, 2) for x in load_after]})
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020], help="TIGER seeds (semantic IDs)")
    parser.add_argument("--no-ablation", action="store_true", help="skip the random / atomic identifier rows")
    parser.add_argument("--no-sasrec", action="store_true", help="skip SASRec")
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP_NUM_THREADS of every child (default: as set in this environment)")
    parser.add_argument("--gin", action="append", default=[], help="extra TIGER binding (repeatable)")
    parser.add_argument("--run-dir", default=None, help="default: a fresh temporary folder")
    args = parser.parse_args()
    if args.threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.chdir(REPO)

    import torch

    from genrec.config import parse_gin
    from genrec.models import MostPopular
    from genrec.training import experiment
    from trainer_run import run_trainer

    root = Path(args.run_dir or tempfile.mkdtemp(prefix="tiger-ml100k-"))
    rows: dict[str, dict] = {}

    def trainer(name: str, kind: str, config: str, bindings: list[str]) -> None:
        before = os.getloadavg()
        metrics, wall = run_trainer(kind, config, root / name, bindings)
        rows[name] = _row(metrics, wall, before, os.getloadavg())
        print(f"{name}: {json.dumps(rows[name])}", file=sys.stderr)

    for seed in args.seeds:
        trainer(f"tiger_seed{seed}", "tiger", "config/tiger/ml100k.gin", [f"train_tiger.seed = {seed}", *args.gin])
    if not args.no_ablation:
        for kind in ("random", "atomic"):
            trainer(f"tiger_{kind}_ids", "tiger", "config/tiger/ml100k.gin",
                    [f"train_tiger.seed = {args.seeds[0]}", f"train_tiger.item_ids = {kind!r}", *args.gin])
    if not args.no_sasrec:
        trainer("sasrec_seed2020", "sasrec", "config/sasrec/ml100k.gin", [])

    parse_gin([], ["experiment.dataset = 'ml-100k'"])
    exp = experiment()
    pop = MostPopular(exp.split.train, exp.num_items)
    popular = exp.evaluators["test"](lambda users, histories: pop.score(histories))
    rows["most_popular"] = {k: round(popular[k], 4) for k in KEYS if k in popular}

    tiger = [rows[f"tiger_seed{s}"]["ndcg@10"] for s in args.seeds]
    out = {"benchmark": "tiger", "dataset": "ml-100k", "split": "loo", "protocol": "full", "mask_history": False,
           "users": len(exp.evaluators["test"].users),
           "tiger_ndcg@10_mean": round(sum(tiger) / len(tiger), 4), "rows": rows,
           "torch_threads": int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())),
           "cpu_count": os.cpu_count(), "loadavg_end": [round(x, 2) for x in os.getloadavg()],
           "tiger_bindings": args.gin, "run_dir": str(root)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
