"""RecExplainer: fidelity to the target SASRec of behaviour (text-only) vs intention vs hybrid mode.

    python benchmarks/explainer.py [--config config/explain/ml100k_debug.gin] [--modes behaviour intention hybrid]

Each mode trains through the real trainer (``genrec/trainers/explain_trainer.py``) with the same
config, seed, target model, training users and held-out evaluation users (``train_explainer.eval_seed``),
so the modes differ only in how the user and the items reach the LLM. Reported per mode on the test
users: ``next_hit@5`` (the target's top-1 among 5 constrained beams), ``rank_ndcg@5`` (5 items ordered
as the target would), ``interest_accuracy`` (yes/no), their mean ``fidelity``, training seconds and
steps; plus the untrained LLM in behaviour mode (``--untrained``: the same evaluation without
training). One JSON line with the load average and threads; run folders under ``--root``.
``--jobs N`` runs the modes in N processes at once (one thread each), then merges their lines.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from genrec.config import parse_gin  # noqa: E402
from genrec.progress import quiet_library_bars  # noqa: E402
from genrec.trainers.explain_trainer import train_explainer  # noqa: E402

KEYS = ("next_hit@5", "rank_ndcg@5", "interest_accuracy", "fidelity")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="config/explain/ml100k_debug.gin")
    parser.add_argument("--modes", nargs="*", default=["behaviour", "intention", "hybrid"])
    parser.add_argument("--gin", action="append", default=[], help="extra gin bindings for every mode")
    parser.add_argument("--root", default="runs/bench/explainer")
    parser.add_argument("--untrained", action="store_true", help="also the untrained LLM (behaviour prompts)")
    parser.add_argument("--fresh", action="store_true", help="delete earlier run folders under --root first")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1, help="modes run in this many processes at once")
    args = parser.parse_args()
    quiet_library_bars()  # no weight-loading bars in a redirected log
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    root = Path(args.root)
    if args.fresh and root.exists():
        shutil.rmtree(root)
    if args.jobs > 1:
        return run_in_processes(args, load_start)
    variants = [(mode, mode, []) for mode in args.modes]
    if args.untrained:
        variants.append(("untrained_behaviour", "behaviour", ["fit.learning_rate = 1e-30", "fit.max_steps = 1"]))
    result = {"benchmark": "explainer", "config": args.config, "modes": {}}
    for name, mode, extra in variants:
        parse_gin([args.config], [*args.gin, f"RecExplainer.mode = '{mode}'", *extra])
        t0 = time.perf_counter()
        metrics = train_explainer(run_dir=str(root / name))
        result["modes"][name] = {**{k: round(metrics["test"][k], 4) for k in KEYS},
                                 "valid_fidelity": round(metrics["valid"]["fidelity"], 4),
                                 "steps": metrics["steps"], "train_seconds": metrics["train_seconds"],
                                 "wall_seconds": round(time.perf_counter() - t0, 1),
                                 "trainable_parameters": metrics["trainable_parameters"]}
        result.update({k: metrics[k] for k in ("dataset", "seed", "target", "tasks", "train_users", "test_users",
                                               "llm", "tuning") if k in metrics})
    best_text = result["modes"].get("behaviour", {}).get("fidelity")
    if best_text is not None:
        result["placeholder_minus_behaviour_fidelity"] = {
            m: round(result["modes"][m]["fidelity"] - best_text, 4) for m in ("intention", "hybrid")
            if m in result["modes"]}
    result.update(threads=torch.get_num_threads(), load_average_start=[round(x, 2) for x in load_start],
                  load_average_end=[round(x, 2) for x in os.getloadavg()], torch=torch.__version__)
    print(json.dumps(result))


def run_in_processes(args: argparse.Namespace, load_start) -> None:
    """Each mode (and ``--untrained``) in its own process, ``args.jobs`` at a time; prints one merged line."""
    names = list(args.modes) + (["untrained"] if args.untrained else [])
    base = [sys.executable, __file__, "--config", args.config, "--root", args.root, "--threads", str(args.threads)]
    base += [f"--gin={binding}" for binding in args.gin]
    lines = []
    for start in range(0, len(names), args.jobs):
        group = [subprocess.Popen(base + (["--modes", name] if name != "untrained" else ["--modes", "--untrained"]),
                                  stdout=subprocess.PIPE, text=True) for name in names[start:start + args.jobs]]
        for process in group:
            out, _ = process.communicate()
            if process.returncode:
                raise SystemExit(f"a mode's process failed (exit {process.returncode}); see its messages above")
            lines.append(json.loads(out.strip().splitlines()[-1]))
    result = {**lines[0], "modes": {k: v for line in lines for k, v in line["modes"].items()}}
    behaviour = result["modes"].get("behaviour", {}).get("fidelity")
    if behaviour is not None:
        result["placeholder_minus_behaviour_fidelity"] = {
            m: round(result["modes"][m]["fidelity"] - behaviour, 4) for m in ("intention", "hybrid")
            if m in result["modes"]}
    result.update(jobs=args.jobs, load_average_start=[round(x, 2) for x in load_start],
                  load_average_end=[round(x, 2) for x in os.getloadavg()])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
