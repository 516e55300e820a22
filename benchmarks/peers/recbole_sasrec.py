"""RecBole 1.2.1's SASRec, genrec's peer, run from the repo in its own virtualenv; prints one JSON line.

    python benchmarks/peers/recbole_sasrec.py --dataset ml-100k                 # full run, seed 2020
    python benchmarks/peers/recbole_sasrec.py --dataset ml-100k --epochs 1      # smoke run
    python benchmarks/peers/recbole_sasrec.py --install-only                    # only build the venv
    python benchmarks/peers/recbole_sasrec.py --split-only --split-out DIR      # only RecBole's split (seconds)

What it does:

1. **Environment.** RecBole 1.2.1 pins old packages that conflict with genrec's, so it gets its own
   virtualenv, built once with :data:`REQUIREMENTS` (``numpy<2``, ``setuptools<81``, ``pandas<3``,
   ``torch==2.13.0``) under ``$GENREC_PEERS_DIR`` (default ``~/.cache/genrec/peers``) in a folder named
   by a hash of the requirements and the Python version, so changed pins build a new one and unchanged
   pins reuse it. A ``.complete`` marker is written last; a folder without it is rebuilt. Only the
   package registries are needed.
2. **Data.** RecBole cannot download its datasets here, so genrec's raw log (``genrec.data.read_log``:
   the pinned MovieLens files genrec fetches into ``data/raw/<name>/``) is written as a RecBole atomic
   file ``<name>.inter`` (``user_id:token item_id:token rating:float timestamp:float``, one row per
   interaction in file order) into a temporary work folder. The dataset keeps its name, so RecBole's
   own dataset properties apply (ml-100k: ``normalize_all`` scales timestamps into float32 [0, 1], which
   creates ties; ml-1m has no properties file, so raw timestamps are read as float32; ``load_col`` is
   set to the file's columns, since RecBole's default loads only ``user_id`` and ``item_id``).
3. **Run.** ``recbole_runner.py`` runs under the venv's interpreter with :data:`RECBOLE_CONFIG` (the
   hyperparameters of ``config/sasrec/ml100k.gin``: max length 50, hidden 64, inner 256, 2 layers,
   2 heads, dropout 0.2/0.2, GELU, CE loss over all items, lr 0.001; RecBole's batches of 256
   prefixes; leave-one-out by time, full ranking, valid NDCG@10 early stopping with patience 10), the
   seed, one torch thread by default, and ``torch.load(weights_only=False)`` for its own checkpoint
   patched in the runner process only (torch >= 2.6 refuses RecBole's pickled checkpoint otherwise).
4. **Result.** One JSON line on stdout (RecBole's log goes to stderr): test NDCG/Recall/MRR @5/10/20,
   best valid NDCG@10, epochs, ``train_seconds`` (training epochs only, validation excluded, as
   genrec's ``train_seconds``), ``train_cpu_seconds`` (the same epochs in CPU seconds of RecBole's
   process), ``fit_seconds`` (RecBole's ``fit`` including validation), the torch thread count,
   ``/proc/loadavg`` before and after, and the RecBole and torch versions.
   ``benchmarks/sasrec.py --peer-json FILE`` reads that line (or ``--run-peer`` runs this script).

With ``--split-out DIR`` the split RecBole evaluated on (after its float32 timestamps and its sort) is
written to ``DIR/split.json`` (user token -> ``{"train": [item tokens], "valid": item, "test": item}``)
and as a genrec dataset ``DIR/<DIR name>.inter`` whose timestamps are each user's positions in that
order, so genrec's leave-one-out split of ``experiment.dataset = "recbole:DIR"`` is RecBole's split
exactly (:func:`split_to_inter`); e.g. ``benchmarks/sasrec.py --gin 'experiment.dataset = "recbole:DIR"'``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from genrec import assets  # noqa: E402
from genrec.data.datasets import read_log  # noqa: E402
from genrec.data.readers import InteractionLog  # noqa: E402
from genrec.io import file_lock  # noqa: E402

RECBOLE_VERSION = "1.2.1"
REQUIREMENTS = (f"recbole=={RECBOLE_VERSION}", "numpy<2", "setuptools<81", "pandas<3", "torch==2.13.0")
DATASETS = ("ml-100k", "ml-1m")
RUNNER = Path(__file__).with_name("recbole_runner.py")
RESULT_PREFIX = "RECBOLE_RESULT "
SPLIT_PREFIX = "RECBOLE_SPLIT "
# RecBole names for the hyperparameters of config/sasrec/ml100k.gin (ml1m.gin includes it).
RECBOLE_CONFIG = {
    "MAX_ITEM_LIST_LENGTH": 50, "hidden_size": 64, "inner_size": 256, "n_layers": 2, "n_heads": 2,
    "hidden_dropout_prob": 0.2, "attn_dropout_prob": 0.2, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
    "initializer_range": 0.02, "loss_type": "CE", "train_neg_sample_args": None,
    "learning_rate": 0.001, "train_batch_size": 256, "eval_batch_size": 4096,
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
    "metrics": ["NDCG", "Recall", "MRR"], "topk": [5, 10, 20], "valid_metric": "NDCG@10",
    "stopping_step": 10, "epochs": 300, "reproducibility": True,
    "use_gpu": False, "device": "cpu", "worker": 0, "show_progress": False, "save_dataset": False,
    "save_dataloaders": False, "log_wandb": False,
}
METRIC_KEYS = tuple(f"{metric}@{k}" for metric in ("ndcg", "recall", "mrr") for k in (5, 10, 20))


class PeerError(RuntimeError):
    """The peer could not be installed or run; the message names the step and the fix."""


def requirements_key() -> str:
    """Hash of the pinned requirements and the Python version that names the venv folder."""
    text = "\n".join((*REQUIREMENTS, f"python{sys.version_info.major}.{sys.version_info.minor}"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def default_venv() -> Path:
    root = Path(os.environ.get("GENREC_PEERS_DIR", "~/.cache/genrec/peers")).expanduser()
    return root / f"recbole-{RECBOLE_VERSION}-{requirements_key()}"


def ensure_venv(venv: Path) -> Path:
    """Build (once) the peer virtualenv at ``venv``; return its Python interpreter."""
    python = venv / "bin" / "python"
    marker = venv / ".complete"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(venv.parent / f".{venv.name}.lock"):
        if marker.exists():
            return python
        if venv.exists():
            shutil.rmtree(venv)  # an interrupted build
        steps = [([sys.executable, "-m", "venv", str(venv)], "create the virtualenv"),
                 ([str(python), "-m", "pip", "install", *REQUIREMENTS], "install " + " ".join(REQUIREMENTS)),
                 ([str(python), "-c", "import recbole, torch; print('recbole', recbole.__version__, 'torch', "
                   "torch.__version__)"], "import recbole")]
        for command, what in steps:
            print(f"[peer] {what}", file=sys.stderr, flush=True)
            done = subprocess.run(command, stdout=sys.stderr, stderr=sys.stderr, check=False)
            if done.returncode != 0:
                raise PeerError(f"could not {what} in {venv} (exit {done.returncode}, output above); "
                                "check that the package registry is reachable, then re-run (the folder is rebuilt)")
        marker.write_text(json.dumps({"requirements": list(REQUIREMENTS), "python": sys.version.split()[0]}) + "\n")
    return python


def atomic_number(value: float) -> str:
    """A float as an atomic-file field: integers without a fraction (``881250949``), else ``repr``."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def write_recbole_inter(log: InteractionLog, folder: Path) -> Path:
    """Write ``log`` as RecBole's ``<folder>/<name>/<name>.inter``; return the file.

    Columns ``user_id:token item_id:token [rating:float] timestamp:float``, tab-separated, one row per
    interaction in the log's order (RecBole sorts by time itself). Written to a temporary name, then
    renamed.

    Raises:
        ValueError: A user or item id holds a tab, a newline or a double quote (RecBole's pandas reader
            would split or unquote it).
    """
    for kind, ids in (("user", log.users), ("item", log.items)):
        bad = next((value for value in ids if any(char in value for char in '\t\n\r"')), None)
        if bad is not None:
            raise ValueError(f"{log.name}: {kind} id {bad!r} holds a tab, newline or double quote, which RecBole's "
                             "atomic reader cannot read; map the ids first")
    rating = ["rating:float"] if log.ratings is not None else []
    header = ["user_id:token", "item_id:token", *rating, "timestamp:float"]
    rows = ["\t".join(header)]
    for row, (user, item) in enumerate(zip(log.users, log.items, strict=True)):
        fields = [user, item] + ([atomic_number(log.ratings[row])] if log.ratings is not None else [])
        rows.append("\t".join(fields + [atomic_number(log.timestamps[row])]))
    path = folder / log.name / f"{log.name}.inter"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text("\n".join(rows) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def split_to_inter(split: dict[str, dict], folder: Path) -> Path:
    """Write an exported RecBole split as ``<folder>/<folder name>.inter`` that genrec splits the same way.

    Each user's rows are its training items, then its valid item, then its test item, with timestamps
    0, 1, 2, ... in that order, so leave-one-out by time (valid = second-last, test = last) returns
    RecBole's split. No rating column: every interaction is kept.
    """
    users, items, stamps = [], [], []
    for user, rows in split.items():
        sequence = [*rows["train"], rows["valid"], rows["test"]]
        users += [user] * len(sequence)
        items += sequence
        stamps += range(len(sequence))
    log = InteractionLog(folder.name, users, items, np.asarray(stamps, dtype=np.float64))
    return write_recbole_inter(log, folder.parent)


def loadavg() -> list[float] | None:
    """The 1, 5 and 15 minute load averages from ``/proc/loadavg``, or None where there is none."""
    try:
        return [float(value) for value in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def run_peer(dataset: str, seed: int = 2020, epochs: int | None = None, threads: int = 1,
             split_out: str | None = None, venv: Path | None = None, keep: bool = False,
             split_only: bool = False) -> dict:
    """Install (once) and run RecBole's SASRec on ``dataset``; return the result as one flat dict.

    With ``split_only`` RecBole prepares the data, ``split_out`` receives its split and nothing is
    trained; the dict then names only the dataset and the split folder.
    """
    if split_only and not split_out:
        raise PeerError("split_only needs a folder to write the split to (--split-out DIR)")
    python = ensure_venv(venv or default_venv())
    work = Path(tempfile.mkdtemp(prefix=f"recbole-{dataset}-"))
    try:
        log = read_log(dataset, assets.data_dir())
        write_recbole_inter(log, work / "data")
        # RecBole loads only user_id and item_id of datasets without a properties file (ml-1m): name the columns.
        columns = ["user_id", "item_id", *(["rating"] if log.ratings is not None else []), "timestamp"]
        config = {**RECBOLE_CONFIG, "load_col": {"inter": columns}, "seed": seed,
                  **({"epochs": epochs} if epochs else {})}
        command = [str(python), str(RUNNER), "--dataset", dataset, "--data-path", str(work / "data"),
                   "--work-dir", str(work), "--config", json.dumps(config), "--threads", str(threads)]
        if split_out:
            Path(split_out).mkdir(parents=True, exist_ok=True)
            command += ["--split-out", str(Path(split_out).resolve() / "split.json")]
        if split_only:
            command.append("--split-only")
        env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        before, start = loadavg(), time.perf_counter()
        result, split_written = None, False
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
            for line in proc.stdout:
                if line.startswith(RESULT_PREFIX):
                    result = json.loads(line[len(RESULT_PREFIX):])
                elif line.startswith(SPLIT_PREFIX):  # written before training: usable even if the run is cut short
                    split_to_inter(json.loads(Path(line[len(SPLIT_PREFIX):].strip()).read_text()),
                                   Path(split_out).resolve())
                    split_written = True
                    print(f"[peer] RecBole's split written to {split_out}", file=sys.stderr, flush=True)
                else:
                    print(line, end="", file=sys.stderr, flush=True)
        finished = split_written if split_only else result is not None
        if proc.returncode != 0 or not finished:
            raise PeerError(f"RecBole's run on {dataset} failed (exit {proc.returncode}, its log above; work folder "
                            f"{work} kept); fix the cause shown there and re-run")
    except BaseException:
        keep = True
        raise
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    split_dataset = {"split_dataset": f"recbole:{Path(split_out).resolve()}"} if split_out else {}
    if split_only:
        return {"dataset": dataset, **split_dataset, "wall_seconds": round(time.perf_counter() - start, 2)}
    test = result.pop("test")
    return {
        "peer": "recbole", "model": "SASRec", "dataset": dataset, "seed": seed,
        **{key: test[key] for key in METRIC_KEYS},
        **result, "max_epochs": config["epochs"], "wall_seconds": round(time.perf_counter() - start, 2),
        "loadavg_before": before, "loadavg_after": loadavg(), "requirements": list(REQUIREMENTS),
        "config": config, **split_dataset,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=DATASETS, default="ml-100k")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--epochs", type=int, default=None, help="cap on training epochs (smoke runs); default 300")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in RecBole's process")
    parser.add_argument("--split-out", default=None,
                        help="write RecBole's split into this folder (split.json + a genrec-readable .inter)")
    parser.add_argument("--venv", type=Path, default=None, help=f"virtualenv folder; default {default_venv()}")
    parser.add_argument("--split-only", action="store_true",
                        help="only write RecBole's split into --split-out (no training; the split is the same for every seed)")
    parser.add_argument("--install-only", action="store_true", help="build the virtualenv and exit")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    args = parser.parse_args()
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    if args.split_only and not args.split_out:
        parser.error("--split-only needs --split-out DIR, the folder the split is written to")
    try:
        if args.install_only:
            print(ensure_venv(args.venv or default_venv()))
            return
        out = run_peer(args.dataset, args.seed, args.epochs, args.threads, args.split_out, args.venv, args.keep,
                       args.split_only)
    except PeerError as error:
        sys.exit(f"recbole_sasrec: {error}")
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
