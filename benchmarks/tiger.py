"""TIGER next to SASRec and most-popular on MovieLens-100k, plus TIGER's item-identifier ablation; one JSON line.

    python benchmarks/tiger.py                          # TIGER (seed 2020), random/atomic IDs, SASRec, most-popular
    python benchmarks/tiger.py --seeds 2020 2021 2022   # TIGER over three seeds
    python benchmarks/tiger.py --rows random atomic     # only the identifier ablation
    python benchmarks/tiger.py --rows bidirectional     # the paper's bidirectional encoder (one pass per target)

Every model sees the same data, split and users under the same protocol: ml-100k, leave-one-out by
time (valid = second-last item, test = last), full ranking over all 1,682 items, history items not
masked, all 943 users, model selection on valid NDCG@10, test reported once. Each trainer runs in a
child process (as benchmarks/trainer_run.py does, plus its own CPU time) with its shipped config: ``config/tiger/ml100k.gin``
(``train_tiger.item_ids`` = ``semantic``, and for the ablation rows ``random``: the same code tuples
dealt to items at random, and ``atomic``: one token per item), ``config/tiger/ml100k_bidirectional.gin``
(the paper's bidirectional encoder, trained one target per pass) and ``config/sasrec/ml100k.gin``
(seed 2020). The semantic IDs are ``runs/rqvae/ml100k/semantic_ids.json``, built first with
``config/rqvae/ml100k.gin`` when missing, before any row starts (so that build is in no row's time).

Reported per row: test NDCG@10 / Recall@10 / MRR@10, valid NDCG@10, ``train_seconds`` (the loop's
training time, validations excluded), ``wall_seconds`` (the whole child process, evaluations
included), ``cpu_seconds`` (CPU time of the whole child process: on a shared machine, the wall time an
idle one would need at 1 thread), epochs, and the load average before and after the run. The machine may be shared: the
load average and the torch thread count (``--threads``, passed to every child as OMP_NUM_THREADS;
with other work on the same cores, 1 thread is several times faster than 2) sit beside the timings.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

KEYS = ("ndcg@10", "recall@10", "mrr@10", "ndcg@5", "recall@20")
ROWS = ("tiger", "random", "atomic", "bidirectional", "sasrec")


def run_child(trainer: str, config: str, run_dir: Path, bindings: list[str]) -> tuple[dict, float, float]:
    """Runs ``genrec/trainers/<trainer>_trainer.py`` like benchmarks/trainer_run.py; returns its metrics.json,
    wall seconds and CPU seconds (user + system of that child alone, from ``os.wait4``)."""
    command = [sys.executable, f"genrec/trainers/{trainer}_trainer.py", config, "--run-dir", str(run_dir)]
    command += [arg for binding in bindings for arg in ("--gin", binding)]
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(run_dir.with_suffix(".log"), "w") as log:
        proc = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed; see {run_dir.with_suffix('.log')}")
    return json.loads((run_dir / "metrics.json").read_text()), wall, usage.ru_utime + usage.ru_stime


def _row(metrics: dict, wall: float, cpu: float, load_before: tuple, load_after: tuple) -> dict:
    row = {k: round(metrics["test"][k], 4) for k in KEYS if k in metrics["test"]}
    for k in ("valid_item_rate", "duplicate_rate"):
        if k in metrics["test"]:
            row[k] = metrics["test"][k]
    row.update({"valid_ndcg@10": round(metrics["valid"]["ndcg@10"], 4), "epochs": metrics["epochs"],
                "best_epoch": metrics["best_epoch"], "steps": metrics["steps"],
                "train_seconds": metrics["train_seconds"], "wall_seconds": round(wall, 1),
                "cpu_seconds": round(cpu, 1),
                "seed": metrics["seed"], "loadavg_before": [round(x, 2) for x in load_before],
                "loadavg_after": [round(x, 2) for x in load_after]})
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020], help="TIGER seeds (semantic IDs)")
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS),
                        help="which trainer rows to run (most-popular is always measured)")
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP_NUM_THREADS of every child (default: as set in this environment)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="trainer rows run at once (timings then share the machine; see cpu_seconds)")
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
    root = Path(args.run_dir or tempfile.mkdtemp(prefix="tiger-ml100k-"))
    rows: dict[str, dict] = {}
    jobs = []
    if "tiger" in args.rows:
        for seed in args.seeds:
            jobs.append((f"tiger_seed{seed}", "tiger", "config/tiger/ml100k.gin", [f"train_tiger.seed = {seed}", *args.gin]))
    for kind in ("random", "atomic"):
        if kind in args.rows:
            jobs.append((f"tiger_{kind}_ids", "tiger", "config/tiger/ml100k.gin",
                         [f"train_tiger.seed = {args.seeds[0]}", f"train_tiger.item_ids = {kind!r}", *args.gin]))
    if "bidirectional" in args.rows:
        jobs.append(("tiger_bidirectional", "tiger", "config/tiger/ml100k_bidirectional.gin",
                     [f"train_tiger.seed = {args.seeds[0]}", *args.gin]))
    if "sasrec" in args.rows:
        jobs.append(("sasrec_seed2020", "sasrec", "config/sasrec/ml100k.gin", []))
    if any(kind == "tiger" for _, kind, _, _ in jobs):  # build the semantic IDs once, before any timing
        from genrec.semantic_ids import ensure_semantic_ids

        parse_gin([], ["experiment.dataset = 'ml-100k'"])
        ensure_semantic_ids("runs/rqvae/ml100k/semantic_ids.json", "config/rqvae/ml100k.gin", experiment().interactions)

    def trainer(name: str, kind: str, config: str, bindings: list[str]) -> None:
        before = os.getloadavg()
        metrics, wall, cpu = run_child(kind, config, root / name, bindings)
        rows[name] = _row(metrics, wall, cpu, before, os.getloadavg())
        print(f"{name}: {json.dumps(rows[name])}", file=sys.stderr)

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for future in [pool.submit(trainer, *job) for job in jobs]:
            future.result()

    parse_gin([], ["experiment.dataset = 'ml-100k'"])
    exp = experiment()
    pop = MostPopular(exp.split.train, exp.num_items)
    popular = exp.evaluators["test"](lambda users, histories: pop.score(histories))
    rows["most_popular"] = {k: round(popular[k], 4) for k in KEYS if k in popular}

    tiger = [rows[f"tiger_seed{s}"]["ndcg@10"] for s in args.seeds if f"tiger_seed{s}" in rows]
    out = {"benchmark": "tiger", "dataset": "ml-100k", "split": "loo", "protocol": "full", "mask_history": False,
           "users": len(exp.evaluators["test"].users),
           "tiger_ndcg@10_mean": round(sum(tiger) / len(tiger), 4) if tiger else None, "rows": rows,
           "torch_threads": int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())),
           "jobs": args.jobs, "cpu_count": os.cpu_count(), "loadavg_end": [round(x, 2) for x in os.getloadavg()],
           "tiger_bindings": args.gin, "run_dir": str(root)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
