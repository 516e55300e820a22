"""Runs RecBole's SASRec inside the peer virtualenv; started by ``recbole_sasrec.py``, not by hand.

This file runs under the peer environment's interpreter (RecBole 1.2.1 and its pins), so it imports
nothing from genrec. It reads the atomic files that ``recbole_sasrec.py`` wrote, trains and evaluates
RecBole's own SASRec with the configuration given as JSON on the command line, and prints one line
``RECBOLE_RESULT {...}`` on stdout (RecBole's own log goes to stdout too, line by line); with
``--split-out`` also ``RECBOLE_SPLIT <file>`` once the split is written, before training (with
``--split-only`` it stops there: no model is built or trained).

Two things are changed in RecBole's process, neither in its files:

- ``torch.load`` (torch >= 2.6 defaults to ``weights_only=True``) gets ``weights_only=False`` for
  RecBole's own best-model checkpoint written by this same process into ``--work-dir`` (it pickles its
  config), and for nothing else;
- ``Trainer._train_epoch`` and ``Trainer._valid_epoch`` are wrapped to time each training epoch
  (validation excluded, as genrec's ``train_seconds``; wall and this process's CPU seconds, the latter
  telling a slow machine from a busy one) and record each epoch's valid NDCG@10.

With ``--split-out FILE`` the split RecBole evaluated on (after its own preprocessing: float32
timestamps, stable sort by time) is written as JSON: per user token the training sequence, the valid
target and the test target, as item tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def patch_torch_load(torch, work_dir: Path) -> None:
    """Let ``torch.load`` read RecBole's checkpoints under ``work_dir`` with ``weights_only=False``."""
    original = torch.load
    root = str(work_dir.resolve())

    def load(f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)) and str(Path(f).resolve()).startswith(root):
            kwargs.setdefault("weights_only", False)
        return original(f, *args, **kwargs)

    torch.load = load


def timed_trainer(trainer, record: dict) -> None:
    """Wrap one trainer's epoch methods to record training seconds and valid NDCG@10 per epoch."""
    train_epoch, valid_epoch = trainer._train_epoch, trainer._valid_epoch

    def train(*args, **kwargs):
        start, cpu = time.perf_counter(), time.process_time()
        out = train_epoch(*args, **kwargs)
        record["epoch_seconds"].append(round(time.perf_counter() - start, 2))
        record["epoch_cpu_seconds"].append(round(time.process_time() - cpu, 2))
        load = [round(x, 2) for x in os.getloadavg()]
        print(f"[peer] training epoch {len(record['epoch_seconds']) - 1}: {record['epoch_seconds'][-1]} s wall, "
              f"{record['epoch_cpu_seconds'][-1]} s CPU, loadavg {load}", flush=True)
        return out

    def valid(*args, **kwargs):
        score, result = valid_epoch(*args, **kwargs)
        record["valid_ndcg@10"].append(round(float(result["ndcg@10"]), 4))
        return score, result

    trainer._train_epoch, trainer._valid_epoch = train, valid


def export_split(dataset, train_data, valid_data, test_data, path: Path) -> None:
    """Write RecBole's leave-one-out split as item tokens: {user: {"train": [...], "valid": i, "test": j}}.

    RecBole's sequential rows are prefixes (history ``item_id_list`` -> target ``item_id``), sorted by
    user and time, then stably by time; within a user they keep that order through the split. A user's
    training sequence is the history of its first row (one item) followed by the targets of its
    training rows; valid and test are the targets of its one valid and one test row.
    """
    uid, iid = dataset.uid_field, dataset.iid_field
    list_field, length_field = iid + dataset.config["LIST_SUFFIX"], dataset.config["ITEM_LIST_LENGTH_FIELD"]
    token = lambda item: str(dataset.id2token(iid, int(item)))  # noqa: E731
    split: dict[str, dict] = {}
    for key, data in (("train", train_data), ("valid", valid_data), ("test", test_data)):
        feat = data.dataset.inter_feat
        for user, item, history, length in zip(feat[uid].numpy(), feat[iid].numpy(), feat[list_field].numpy(),
                                               feat[length_field].numpy()):
            name = str(dataset.id2token(uid, int(user)))
            if name not in split:
                if length != 1:
                    raise RuntimeError(f"user {name}: first {key} row has {length} history items, expected 1")
                split[name] = {"train": [token(history[0])]}
            if key == "train":
                split[name]["train"].append(token(item))
            else:
                split[name][key] = token(item)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(split))
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="RecBole dataset name (its properties apply)")
    parser.add_argument("--data-path", required=True, help="folder holding <dataset>/<dataset>.inter")
    parser.add_argument("--work-dir", required=True, help="RecBole's log/ and saved/ go here")
    parser.add_argument("--config", required=True, help="RecBole configuration as a JSON object")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--split-out", default=None)
    parser.add_argument("--split-only", action="store_true", help="stop once the split is written")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value pairs from sys.argv; ours are not for it

    import torch

    torch.set_num_threads(args.threads)
    work_dir = Path(args.work_dir)
    os.chdir(work_dir)
    patch_torch_load(torch, work_dir)

    import recbole
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.utils import get_trainer, init_logger, init_seed

    config_dict = {**json.loads(args.config), "data_path": args.data_path,
                   "checkpoint_dir": str(work_dir / "saved")}
    config = Config(model="SASRec", dataset=args.dataset, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    if args.split_out:
        export_split(dataset, train_data, valid_data, test_data, Path(args.split_out))
        print(f"RECBOLE_SPLIT {args.split_out}", flush=True)  # the caller converts it before training starts
    if args.split_only:
        return
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = SASRec(config, train_data.dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    record: dict = {"epoch_seconds": [], "epoch_cpu_seconds": [], "valid_ndcg@10": []}
    timed_trainer(trainer, record)

    start = time.perf_counter()
    best_valid_score, _ = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    fit_seconds = time.perf_counter() - start
    test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)

    result = {
        "recbole_version": recbole.__version__, "torch_version": torch.__version__,
        "threads": torch.get_num_threads(), "users": int(dataset.user_num - 1), "items": int(dataset.item_num - 1),
        "prefix_rows": int(len(dataset.inter_feat)),  # after augmentation: one row per (history, next item)
        "test": {key: round(float(value), 4) for key, value in test.items()},
        "best_valid_ndcg@10": round(float(best_valid_score), 4), "epochs": len(record["epoch_seconds"]),
        "train_seconds": round(sum(record["epoch_seconds"]), 2), "fit_seconds": round(fit_seconds, 2),
        "train_cpu_seconds": round(sum(record["epoch_cpu_seconds"]), 2),
        "epoch_seconds": record["epoch_seconds"], "valid_ndcg@10_per_epoch": record["valid_ndcg@10"],
    }
    sys.stdout.flush()
    print("RECBOLE_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
