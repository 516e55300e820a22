"""Train and evaluate TIGER: a small encoder-decoder from semantic-ID histories to the next item's ID.

    python genrec/trainers/tiger_trainer.py config/tiger/ml100k.gin [--gin "train_tiger.item_ids = 'random'"]

Steps: the semantic IDs the config names (built first with the RQ-VAE config it names when the file
does not exist yet) -> the item identifiers of the run (``semantic``, or the ablations ``random``
and ``atomic``, :func:`genrec.semantic_ids.ablation_ids`) -> a randomly initialised TIGER -> every
(history prefix -> next item) example of the training sequences (:class:`NextItemPrefixes`), or,
with ``TIGER.encoder_attention = "causal"``, windows that train all their targets in one pass
(:class:`SequenceWindows` with the user position first) ->
the shared loop -> trie-constrained beam search over every item, full-ranking metrics on valid
(model selection) and test -> ``<run dir>/model/`` (``TIGER.save_pretrained``). ``metrics.json``
also holds ``valid_item_rate`` and ``duplicate_rate`` of the returned lists.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import gin

from genrec.config import run
from genrec.data import SPLITS
from genrec.data.generative import NextItemPrefixes
from genrec.data.windows import SequenceWindows
from genrec.models.tiger import TIGER
from genrec.semantic_ids import ablation_ids, ensure_semantic_ids
from genrec.training import experiment, fit, seed_everything


@gin.configurable
def train_tiger(run_dir: str = "runs/tiger", seed: int = 2020,
                semantic_ids: str = "runs/rqvae/ml100k/semantic_ids.json",
                rqvae_config: str | None = "config/rqvae/ml100k.gin", item_ids: str = "semantic",
                window_stride: int | None = None) -> dict:
    """Trains TIGER on the experiment's training sequences; returns the metrics of the run.

    Args:
        run_dir: the run folder.
        seed: seeds initialisation, dropout, batch order and the ``random`` identifiers.
        semantic_ids: the ``semantic_ids.json`` to train on.
        rqvae_config: the RQ-VAE gin config that builds ``semantic_ids`` (into its folder) when the
            file does not exist; ``None``: require the file.
        item_ids: ``semantic`` (the RQ-VAE codes), ``random`` (the same code tuples dealt to items at
            random) or ``atomic`` (one token per item): the TIGER paper's identifier ablation.
        window_stride: distance between the training windows of a causal-encoder TIGER (default: its
            ``max_history``; see :class:`genrec.data.windows.SequenceWindows`).

    ``TIGER.user_buckets = 0`` trains without the hashed user token.
    """
    seed_everything(seed)
    exp = experiment()
    ids = ensure_semantic_ids(semantic_ids, rqvae_config, exp.interactions)
    ids = ablation_ids(ids, item_ids, seed)
    model = TIGER(ids)
    model.set_user_ids(exp.interactions.user_ids)
    history = model.settings["max_history"]
    if model.settings["encoder_attention"] == "causal":
        data = SequenceWindows(exp.split.train, history, window_stride, with_user=True)
        labelled = data.labels if model.settings["user_buckets"] else data.labels[:, 1:]  # label 0: the user's
        targets = int((labelled != -100).sum())
    else:
        data = NextItemPrefixes(exp.split.train, history)
        targets = len(data)
    info = {**exp.info, "semantic_ids": str(semantic_ids), "semantic_ids_fingerprint": ids.fingerprint,
            "item_ids": item_ids, "codebook_sizes": ids.codebook_sizes, "training_examples": len(data),
            "training_targets": targets,
            "parameters": sum(p.numel() for p in model.parameters())}
    metrics = fit(model, data, exp.evaluate_model(), run_dir=run_dir, info=info, seed=seed)
    if int(os.environ.get("RANK", "0")) == 0:
        model.save_pretrained(Path(run_dir) / "model")
    return metrics


if __name__ == "__main__":
    metrics = run(train_tiger, splits=list(SPLITS))
    print(json.dumps({"valid": metrics["valid"], "test": metrics["test"]}, indent=2))
