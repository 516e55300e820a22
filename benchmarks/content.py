"""Each content-model preset's ml-100k NDCG@10 and wall time next to our SASRec and most-popular.

    python benchmarks/content.py [--steps 150] [--batch-size 32] [--presets nrms naml ...]
        [--item-text original | augmented[:<cache path>]]
        [--sasrec-config config/sasrec/ml100k_debug.gin] [--out runs/benchmarks/content.json]

Every preset (``config/content/ml100k/<name>.gin``) runs through the content trainer in a child process
with the same short budget: ``--steps`` optimizer steps of ``--batch-size`` examples, validation on all
943 users every ``--steps / 3`` steps (the best one is kept), then test once; leave-one-out, full ranking
over all 1,682 items, history masked (the presets' protocol). SASRec runs its own recipe
(``--sasrec-config``, by default the 10-epoch debug recipe) twice: under the same masked protocol, and
under genrec's default unmasked one (the protocol of the SASRec figures in the README). Most-popular is
computed under the masked protocol. One JSON line per run (test metrics, wall time of the child process,
the loop's train/eval seconds, machine load) and a markdown table at the end.

``--item-text augmented`` trains every preset on the catalogue text plus the LLM-written descriptions
of :mod:`genrec.augment` (the gin switch ``experiment.item_text``; write the cache first with
``python -m genrec.augment --dataset ml-100k``); SASRec and most-popular do not read item text.

The budget is far below convergence for the content models (150 x 32 examples is 5% of an epoch), so
the table compares what each model reaches in a few minutes on a CPU, not converged quality.
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

from trainer_run import run_trainer  # noqa: E402  (benchmarks/, this script's folder)

PRESETS = ("nrms", "naml", "lstur", "deepfm", "dcn", "din", "llm_nrms")


def _line(name: str, metrics: dict, wall: float, **extra) -> dict:
    m = metrics
    return {"benchmark": "content", "model": name, "dataset": m["dataset"], "mask_history": m["mask_history"],
            "test_ndcg@10": round(m["test"]["ndcg@10"], 4), "test_recall@10": round(m["test"]["recall@10"], 4),
            "valid_ndcg@10": round(m["valid"]["ndcg@10"], 4), "steps": m["steps"],
            "wall_seconds": round(wall, 1), "train_seconds": m["train_seconds"],
            "eval_seconds": m["eval_seconds"] + m["test_seconds"],
            "trainable_parameters": m.get("trainable_parameters"), "load_average_1m": round(os.getloadavg()[0], 2),
            **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--sasrec-config", default="config/sasrec/ml100k_debug.gin")
    parser.add_argument("--item-text", default="original",
                        help="experiment.item_text of the content presets: original, augmented or augmented:<path>")
    parser.add_argument("--no-sasrec", action="store_true")
    parser.add_argument("--out", default="runs/benchmarks/content.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="content-bench-"))
    every = max(1, args.steps // 3)
    lines = []
    for preset in args.presets:
        run_dir = work / preset
        metrics, wall = run_trainer("content", f"config/content/ml100k/{preset}.gin", run_dir,
                                    [f"fit.max_steps = {args.steps}", f"fit.batch_size = {args.batch_size}",
                                     f"fit.eval_every_steps = {every}", "fit.eval_every_epochs = 1000",
                                     f"experiment.item_text = {args.item_text!r}"])
        line = _line(preset, metrics, wall, operators=metrics.get("operators"), item_text=args.item_text)
        print(json.dumps(line), flush=True)
        lines.append(line)
    if not args.no_sasrec:
        for masked in (True, False):
            run_dir = work / f"sasrec_mask{int(masked)}"
            metrics, wall = run_trainer("sasrec", args.sasrec_config, run_dir, [f"experiment.mask_history = {masked}"])
            line = _line("sasrec", metrics, wall, config=args.sasrec_config)
            print(json.dumps(line), flush=True)
            lines.append(line)

        from genrec.config import parse_gin
        from genrec.models import MostPopular
        from genrec.training import experiment

        parse_gin([], ["experiment.dataset = 'ml-100k'", "experiment.mask_history = True"])
        exp = experiment()
        pop = MostPopular(exp.split.train, exp.num_items)
        test = exp.evaluators["test"](lambda users, histories: pop.score(histories))
        line = {"benchmark": "content", "model": "most_popular", "dataset": "ml-100k", "mask_history": True,
                "test_ndcg@10": round(test["ndcg@10"], 4), "test_recall@10": round(test["recall@10"], 4)}
        print(json.dumps(line), flush=True)
        lines.append(line)

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("".join(json.dumps(line) + "\n" for line in lines))
    print("\n| model | operators (content / behavior / predictor) | history masked | test NDCG@10 | test Recall@10 "
          "| steps | wall (s) |\n|---|---|---|---|---|---|---|")
    for line in lines:
        ops = " / ".join((line.get("operators") or {}).values()) or "-"
        print(f"| {line['model']} | {ops} | {'yes' if line['mask_history'] else 'no'} | {line['test_ndcg@10']:.4f} | "
              f"{line['test_recall@10']:.4f} | {line.get('steps', '-')} | {line.get('wall_seconds', '-')} |")


if __name__ == "__main__":
    main()
