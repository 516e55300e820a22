"""Train and evaluate LC-Rec: an LLM fine-tuned to generate items' semantic-ID tokens.

    python genrec/trainers/lcrec_trainer.py config/lcrec/ml100k/lcrec_debug.gin [--gin "fit.max_steps = 50"]

Steps: the semantic IDs the config names (built first with the RQ-VAE config it names, in a
separate process, when the file does not exist yet) -> the LLM (bundled SmolLM2 by default) gains
one token per code -> optional LoRA -> instruction tuning on seqrec / item2index / index2item by the
shared loop -> trie-constrained beam search over every item, full-ranking metrics on valid (model
selection) and test -> ``<run dir>/model/`` (``LCRec.save_pretrained``). ``metrics.json`` ``test`` also
holds ``valid_item_rate`` (share of returned entries that are catalogue items) and ``duplicate_rate``
(share of entries repeating an earlier entry of the same list).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import gin
import numpy as np
import torch

from genrec.config import ConfigError, run
from genrec.data import SPLITS, Interactions
from genrec.io import file_lock
from genrec.llm.tasks import TaskData
from genrec.models.lcrec import LCRec, lora_settings
from genrec.semantic_ids import SemanticIDs
from genrec.training import experiment, fit, seed_everything

REPO = Path(__file__).resolve().parents[2]
_DISTRIBUTED_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                    "GROUP_RANK", "ROLE_RANK", "ROLE_WORLD_SIZE", "TORCHELASTIC_RUN_ID")


def ensure_semantic_ids(path: str | Path, rqvae_config: str | None, interactions: Interactions) -> SemanticIDs:
    """Loads the semantic IDs at ``path``, building them first with ``rqvae_config`` if missing.

    The RQ-VAE trainer runs in a child process (its own gin configuration), with ``path``'s folder
    as its run folder. Under a multi-process launch the first process to take the lock builds
    them and the others wait, then load the same file.
    """
    path = Path(path)
    if not path.is_file():
        if rqvae_config is None:
            raise ConfigError(f"semantic IDs {path} do not exist and train_lcrec.rqvae_config is None; build them "
                              "with genrec/trainers/rqvae_trainer.py or name an RQ-VAE config")
        path.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(path.parent / ".build.lock"):
            if not path.is_file():
                _build_semantic_ids(path, rqvae_config)
    return SemanticIDs.load(path, interactions)


def _build_semantic_ids(path: Path, rqvae_config: str) -> None:
    if path.name != "semantic_ids.json":
        raise ConfigError(f"train_lcrec.semantic_ids must end in semantic_ids.json to be built, got {path}")
    if not Path(rqvae_config).is_file():
        raise ConfigError(f"RQ-VAE config {rqvae_config} not found (run from the repository root)")
    print(f"genrec: {path} does not exist yet; building it with {rqvae_config}", file=sys.stderr)
    env = {k: v for k, v in os.environ.items() if k not in _DISTRIBUTED_ENV and not k.startswith("ACCELERATE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    command = [sys.executable, str(REPO / "genrec" / "trainers" / "rqvae_trainer.py"), rqvae_config,
               "--run-dir", str(path.parent)]
    result = subprocess.run(command, env=env, stdout=sys.stderr)
    if result.returncode != 0 or not path.is_file():
        raise ConfigError(f"building semantic IDs failed (exit {result.returncode}): {' '.join(command)}")


def list_health(lists: list[torch.Tensor]) -> dict[str, float]:
    """``valid_item_rate`` and ``duplicate_rate`` of ranked lists [b, K] of item indices (-1 = none)."""
    items = torch.cat(lists) if lists else torch.zeros(0, 1, dtype=torch.long)
    valid = items > 0
    ordered, _ = items.sort(dim=1)
    repeats = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] > 0)
    total = max(items.numel(), 1)
    return {"valid_item_rate": float(valid.sum()) / total, "duplicate_rate": float(repeats.sum()) / total}


@gin.configurable
def train_lcrec(run_dir: str = "runs/lcrec", seed: int = 2020,
                semantic_ids: str = "runs/rqvae/ml100k/semantic_ids.json",
                rqvae_config: str | None = "config/rqvae/ml100k.gin", lora: bool = False,
                code_init: str = "mean") -> dict:
    """Fine-tunes LC-Rec and evaluates it by constrained generation; returns the metrics of the run.

    Args:
        run_dir: the run folder.
        seed: seeds LoRA initialisation, template choice and batch order.
        semantic_ids: the ``semantic_ids.json`` to train on.
        rqvae_config: the RQ-VAE gin config that builds ``semantic_ids`` (into its folder) when the
            file does not exist; ``None``: require the file.
        lora: train LoRA adapters (plus the new token rows) instead of every weight.
        code_init: ``mean`` (new token rows = mean embedding of their items' text tokens) or ``default``.
    """
    seed_everything(seed)
    exp = experiment()
    ids = ensure_semantic_ids(semantic_ids, rqvae_config, exp.interactions)
    model = LCRec()
    model.add_codebook_tokens(ids.levels, ids.codebook_sizes, init=code_init, item_codes=ids.codes[1:],
                              item_texts=exp.catalog.texts())
    model.set_items(ids, exp.interactions.item_ids)
    if lora:
        model.enable_lora(**lora_settings())
    data = TaskData(exp.split.train, model.item_code_strings, exp.catalog, model.format, seed=seed)
    print(f"LC-Rec training examples: {data.counts}", file=sys.stderr)
    k = max(exp.evaluators["valid"].ks)
    lists: list[torch.Tensor] = []

    def evaluate(model, which, accelerator):
        lists.clear()

        def recommend(users, histories):
            items, _ = model.recommend_indices(histories, k=k)
            lists.append(items.cpu())
            return items

        metrics = exp.evaluators[which].evaluate_ranked(recommend, accelerator)
        health = torch.tensor(list(list_health(lists).values()), device=accelerator.device)
        return {**metrics, **dict(zip(("valid_item_rate", "duplicate_rate"),
                                      accelerator.reduce(health, "mean").tolist()))}

    info = {**exp.info, "semantic_ids": str(semantic_ids), "semantic_ids_fingerprint": ids.fingerprint,
            "codebook_sizes": ids.codebook_sizes, "task_examples": data.counts,
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    metrics = fit(model, data, evaluate, run_dir=run_dir, info=info, seed=seed, collate_fn=TaskData.collate)
    if int(os.environ.get("RANK", "0")) == 0:
        model.save_pretrained(Path(run_dir) / "model")
    return metrics


if __name__ == "__main__":
    metrics = run(train_lcrec, splits=list(SPLITS))
    print(json.dumps({"valid": metrics["valid"], "test": metrics["test"]}, indent=2))
