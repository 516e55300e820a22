"""SASRec (ours) under RecBole 1.2.1's protocol and hyperparameters, beside RecBole itself; prints one JSON line.

    python benchmarks/sasrec.py --dataset ml-100k --run-peer              # RecBole, then ours, same invocation
    python benchmarks/sasrec.py --dataset ml-100k --run-peer --same-split # ... ours trained on RecBole's exact split
    python benchmarks/sasrec.py --dataset ml-1m --run-peer --peer-epochs 1 --equal-wall   # ours given the peer's training time
    python benchmarks/sasrec.py --dataset ml-100k --peer-json peer.jsonl  # ours against a recorded peer line
    python benchmarks/sasrec.py --dataset ml-100k --seeds 2020 2021 2022 --peer-json p2020.jsonl \
        --peer-json p2021.jsonl --peer-json p2022.jsonl --split-dataset recbole:DIR   # 3 seeds: means, ratios of means
    python benchmarks/sasrec.py --dataset ml-100k                         # ours only

Protocol (identical to the peer run): leave-one-out by timestamp (valid = second-last, test = last),
full ranking over all items, history items not masked, CE loss, max length 50, hidden 64, inner 256,
GELU, 2 layers, 2 heads, dropout 0.2/0.2, lr 0.001, early stopping on valid NDCG@10 with patience 10,
seed 2020 (config/sasrec/<dataset>.gin). Training samples differ on purpose: RecBole feeds every
prefix and takes one loss per prefix; we take a loss at every position of all-position windows
(genrec.data.windows).

The peer is RecBole 1.2.1's SASRec run by ``benchmarks/peers/recbole_sasrec.py`` in its own
virtualenv (its pinned dependencies conflict with ours): ``--run-peer`` runs it first in this
invocation (same machine, same thread count), ``--peer-json FILE`` reads the JSON line it printed
earlier. ``--split-dataset recbole:DIR`` trains and scores ours on RecBole's exact split, written by
the peer's ``--split-out DIR``. With a peer, the output holds its line under ``"recbole"`` and the
ratios of ours to it; beside each timing stand the torch thread count, ``/proc/loadavg`` before and
after, and the process's CPU seconds (on a shared machine wall time measures the load as much as the
code). The most-popular baseline is measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from genrec.config import parse_gin  # noqa: E402
from genrec.models import MostPopular  # noqa: E402
from genrec.trainers.sasrec_trainer import train_sasrec  # noqa: E402
from genrec.training import experiment  # noqa: E402

CONFIGS = {"ml-100k": "config/sasrec/ml100k.gin", "ml-1m": "config/sasrec/ml1m.gin"}
PEER_SCRIPT = REPO / "benchmarks" / "peers" / "recbole_sasrec.py"
KEYS = ("ndcg@10", "recall@10", "mrr@10", "recall@5", "recall@20", "ndcg@5", "ndcg@20")
RATIO_KEYS = ("ndcg@10", "ndcg@5", "mrr@10", "recall@10")


def parse_peer_line(text: str, source: str, dataset: str | None = None) -> dict:
    """The last peer JSON line (``{"peer": "recbole", ...}``) in ``text``, checked against ``dataset``.

    Other lines (logs, blank lines) are skipped, so a whole captured stdout or log file can be passed.

    Raises:
        ValueError: No peer line, a line without a test metric, or one for another dataset.
    """
    peer = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("peer") == "recbole":
                peer = record
    fix = "write it with: python benchmarks/peers/recbole_sasrec.py --dataset DATASET > FILE"
    if peer is None:
        raise ValueError(f"{source}: no RecBole peer line (a JSON object with \"peer\": \"recbole\"); {fix}")
    missing = [key for key in (*KEYS, "train_seconds", "dataset", "seed") if key not in peer]
    if missing:
        raise ValueError(f"{source}: the peer line lacks {missing}; {fix}")
    if dataset is not None and peer["dataset"] != dataset:
        raise ValueError(f"{source}: the peer line is for {peer['dataset']!r}, not {dataset!r}; {fix}")
    return peer


def run_peer(dataset: str, seed: int, epochs: int | None, threads: int, split_out: str | None = None) -> dict:
    """Run ``benchmarks/peers/recbole_sasrec.py`` (its log to our stderr) and parse its JSON line; with
    ``split_out``, the peer also writes the split it evaluated on there (its ``--split-out``)."""
    command = [sys.executable, str(PEER_SCRIPT), "--dataset", dataset, "--seed", str(seed), "--threads", str(threads)]
    if epochs:
        command += ["--epochs", str(epochs)]
    if split_out:
        command += ["--split-out", split_out]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"sasrec benchmark: the RecBole peer failed (exit {done.returncode}, its log above); "
                 f"run {' '.join(command[1:])} alone to see why")
    return parse_peer_line(done.stdout, "recbole_sasrec.py output", dataset)


def compare(ours: dict, peer: dict) -> dict:
    """Ratios of our test metrics and training time to the peer's."""
    out = {f"{key}_vs_recbole": round(ours[key] / peer[key], 3) for key in RATIO_KEYS if peer.get(key)}
    if peer.get("train_seconds"):
        out["time_fraction_of_recbole"] = round(ours["train_seconds"] / peer["train_seconds"], 3)
    return out


def read_peers(files: list[str], dataset: str) -> dict[int, tuple[dict, str]]:
    """The peer line of each ``--peer-json`` file and the file's name, by seed (one file per seed)."""
    peers = {}
    for name in files:
        try:
            peer = parse_peer_line(Path(name).read_text(encoding="utf-8"), name, dataset)
        except (OSError, ValueError) as error:
            sys.exit(f"sasrec benchmark: {error}")
        if peer["seed"] in peers:
            sys.exit(f"sasrec benchmark: two --peer-json files hold the peer's seed {peer['seed']}; pass one per seed")
        peers[peer["seed"]] = (peer, name)
    return peers


def run_seed(args: argparse.Namespace, seed: int, peer: dict | None, source: str | None, run_dir: str) -> dict:
    """One seed of ours (after the peer with ``--run-peer``): the benchmark's JSON record for that seed.

    ``peer`` is the peer's line read from the file ``source`` (``None``: no peer, or ``--run-peer``)."""
    split_dataset = args.split_dataset
    if args.run_peer:
        split_out = str(Path(run_dir) / "recbole_split") if args.same_split else None
        peer, source = run_peer(args.dataset, seed, args.peer_epochs, args.threads, split_out), "run in this invocation"
        if split_out:
            split_dataset = f"recbole:{split_out}"
    data = [f"experiment.dataset = {split_dataset!r}"] if split_dataset else []
    wall = [f"fit.max_train_seconds = {float(peer['train_seconds'])}"] if args.equal_wall else []
    bindings = [f"train_sasrec.run_dir = {run_dir!r}", f"train_sasrec.seed = {seed}", *data, *args.gin, *wall]
    parse_gin([args.config or CONFIGS[args.dataset]], bindings)
    before, cpu = [round(x, 2) for x in os.getloadavg()], time.process_time()
    metrics = train_sasrec()
    cpu, after = time.process_time() - cpu, [round(x, 2) for x in os.getloadavg()]

    parse_gin([], [f"experiment.dataset = {split_dataset or args.dataset!r}"])
    exp = experiment()
    pop = MostPopular(exp.split.train, exp.num_items)
    popular = exp.evaluators["test"](lambda users, histories: pop.score(histories))

    out = {
        "benchmark": "sasrec", "dataset": args.dataset, "split_dataset": split_dataset,
        "split": metrics["split"], "protocol": metrics["protocol"],
        "seed": metrics["seed"], "fingerprint": metrics["fingerprint"],
        **{k: round(metrics["test"][k], 4) for k in KEYS},
        "valid_ndcg@10": round(metrics["valid"]["ndcg@10"], 4),
        "epochs": metrics["epochs"], "best_epoch": metrics["best_epoch"],
        "train_seconds": metrics["train_seconds"], "eval_seconds": metrics["eval_seconds"],
        "cpu_seconds": round(cpu, 2),  # this process, the whole train_sasrec call (data, training, validation, test)
        "threads": torch.get_num_threads(), "loadavg_before": before, "loadavg_after": after,
        "peak_rss_mib": metrics["peak_rss_mib"], "most_popular_ndcg@10": round(popular["ndcg@10"], 4),
        "config": args.config or CONFIGS[args.dataset], "bindings": args.gin + wall,
        "stopped_by_time": metrics.get("stopped_by_time", False),
    }
    if peer is not None:
        out["recbole"] = peer
        out["recbole_source"] = source
        out["same_seed_as_recbole"] = peer["seed"] == metrics["seed"]
        out.update(compare(out, peer))
    return out


def summarise(rows: list[dict]) -> dict:
    """Several seeds: each seed's record under ``per_seed``, the means of ours (and of the peer's), and the
    ratios of the means, which the 3-seed target is stated in."""
    mean = lambda values: round(sum(values) / len(values), 4)  # noqa: E731
    first = rows[0]
    out = {"benchmark": "sasrec", "dataset": first["dataset"], "split_dataset": first["split_dataset"],
           "split": first["split"], "protocol": first["protocol"], "seeds": [r["seed"] for r in rows],
           "config": first["config"], "bindings": first["bindings"],
           "mean": {k: mean([r[k] for r in rows]) for k in (*KEYS, "valid_ndcg@10")},
           "train_seconds": round(sum(r["train_seconds"] for r in rows), 2),
           "cpu_seconds": round(sum(r["cpu_seconds"] for r in rows), 2),
           "threads": first["threads"], "loadavg": [r["loadavg_before"] + r["loadavg_after"] for r in rows]}
    if all("recbole" in r for r in rows):
        peers = [r["recbole"] for r in rows]
        out["recbole_mean"] = {k: mean([p[k] for p in peers]) for k in KEYS}
        out["recbole_train_seconds"] = round(sum(p["train_seconds"] for p in peers), 2)
        out.update(compare({**out["mean"], "train_seconds": out["train_seconds"]},
                           {**out["recbole_mean"], "train_seconds": out["recbole_train_seconds"]}))
        out["ndcg@10_vs_recbole_per_seed"] = [r["ndcg@10_vs_recbole"] for r in rows]
    out["per_seed"] = rows
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(CONFIGS), default="ml-100k")
    parser.add_argument("--seed", type=int, default=2020, help="ours and the peer's (train_sasrec.seed)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="several seeds, run one after another; prints each seed's record, the means and the "
                             "ratios of the means (with --peer-json: one file per seed)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, ours and the peer's")
    parser.add_argument("--config", default=None, help="gin file for ours; default config/sasrec/<dataset>.gin")
    parser.add_argument("--gin", action="append", default=[], help="extra binding (repeatable)")
    parser.add_argument("--run-dir", default=None,
                        help="default: a fresh temporary folder; with --seeds, one sub-folder seed<S> per seed")
    peer_source = parser.add_mutually_exclusive_group()
    peer_source.add_argument("--peer-json", action="append", default=[],
                             help="a file holding the peer's JSON line (repeatable: one per seed)")
    peer_source.add_argument("--run-peer", action="store_true", help="run the RecBole peer first, in this invocation")
    parser.add_argument("--peer-epochs", type=int, default=None, help="cap the peer's epochs (smoke runs)")
    parser.add_argument("--split-dataset", default=None,
                        help="train and score ours on this dataset instead, e.g. recbole:DIR written by the peer's "
                             "--split-out DIR (RecBole's exact split); the gin file's other settings stay")
    parser.add_argument("--same-split", action="store_true",
                        help="with --run-peer: the peer writes its split into the run folder and ours trains and "
                             "is scored on it (--split-dataset recbole:<run dir>/recbole_split)")
    parser.add_argument("--equal-wall", action="store_true",
                        help="with a peer: ours trains at most the peer's training seconds (fit.max_train_seconds), "
                             "then validates and tests: the comparison at equal wall time")
    args = parser.parse_args()
    if args.equal_wall and not (args.run_peer or args.peer_json):
        sys.exit("sasrec benchmark: --equal-wall needs a peer (--run-peer or --peer-json)")
    if args.same_split and (not args.run_peer or args.split_dataset):
        sys.exit("sasrec benchmark: --same-split needs --run-peer and no --split-dataset")
    seeds = args.seeds or [args.seed]
    if len(set(seeds)) != len(seeds):
        sys.exit(f"sasrec benchmark: --seeds {' '.join(map(str, seeds))} repeats a seed")
    peers = read_peers(args.peer_json, args.dataset)
    missing = [s for s in seeds if args.peer_json and s not in peers]
    if missing:
        sys.exit(f"sasrec benchmark: no --peer-json file holds the peer's seed {missing[0]} (they hold "
                 f"{sorted(peers)}); pass matching --seed/--seeds or run the peer with --seed {missing[0]}")
    root = str(Path(args.run_dir).resolve()) if args.run_dir else tempfile.mkdtemp(prefix=f"sasrec-{args.dataset}-")
    os.chdir(REPO)  # after the run folder is resolved; config paths and --split-dataset are the repository's
    torch.set_num_threads(args.threads)
    rows = [run_seed(args, seed, *peers.get(seed, (None, None)), str(Path(root) / f"seed{seed}") if args.seeds else root)
            for seed in seeds]
    print(json.dumps(rows[0] if args.seeds is None else summarise(rows)))


if __name__ == "__main__":
    main()
