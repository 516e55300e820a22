"""Train and evaluate the CLLM4Rec-style soft-token recommender (collaborative embeddings in an LLM).

    python genrec/trainers/cllm4rec_trainer.py config/cllm4rec/ml100k_debug.gin [--split ratio] [--gin "CLLM4Rec.tuning = 'lora'"]

Steps: the experiment's data and split -> :class:`~genrec.models.cllm4rec.CLLM4Rec` (bundled SmolLM2
by default; frozen, LoRA or fully fine-tuned) -> user-prefixed training windows -> the shared loop
(model selection on valid under the main protocol) -> test once. With
``experiment.extra_protocols = ["sampled"]`` (the shipped configs) ``metrics.json`` reports full
ranking (``test.ndcg@10``) and the sampled protocol (``test.sampled.hit@10`` ...) side by side, from
one scoring pass. The model, with every user's known history, is saved to ``<run dir>/model/``
(``CLLM4Rec.from_pretrained``).
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
from genrec.data.windows import SequenceWindows
from genrec.models.cllm4rec import CLLM4Rec
from genrec.training import experiment, fit, seed_everything


@gin.configurable
def train_cllm4rec(run_dir: str = "runs/cllm4rec", seed: int = 2020, window_stride: int | None = None) -> dict:
    """Trains the soft-token model on the experiment's training sequences; returns the metrics of the run.

    Args:
        run_dir: the run folder (checkpoints, logs, metrics, ``model/``).
        seed: seeds table/projection/LoRA initialisation, user dropout, negatives and batch order.
        window_stride: distance between training windows (default: the model's ``max_history``; see
            :class:`~genrec.data.windows.SequenceWindows`).
    """
    seed_everything(seed)
    exp = experiment()
    model = CLLM4Rec(num_users=exp.interactions.num_users, num_items=exp.num_items)
    model.set_ids(exp.interactions.user_ids, exp.interactions.item_ids)
    windows = SequenceWindows(exp.split.train, model.max_history, window_stride, with_user=True)
    info = {**exp.info, "tuning": model.settings["tuning"], "llm": model.settings["pretrained_path"],
            "training_windows": len(windows),
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    metrics = fit(model, windows, exp.evaluate_model(), run_dir=run_dir, info=info, seed=seed)
    if int(os.environ.get("RANK", "0")) == 0:
        model.set_histories(exp.interactions.sequences)  # serving knows every interaction
        model.save_pretrained(Path(run_dir) / "model")
    return metrics


if __name__ == "__main__":
    metrics = run(train_cllm4rec, splits=list(SPLITS))
    print(json.dumps({"valid": metrics["valid"], "test": metrics["test"]}, indent=2))
