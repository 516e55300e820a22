"""Training of a causal next-item model (SASRec, HSTU) on all-position windows, shared by their trainers.

The model class is built with ``num_items`` from the data (its other settings from gin), learns the
experiment's raw item ids, trains with :func:`genrec.training.fit` on
:class:`genrec.data.windows.SequenceWindows` of its ``max_history``, and the best weights are saved to
``<run dir>/model/`` with the model's ``save_pretrained`` (main process only).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from genrec.data.windows import SequenceWindows
from genrec.training.experiment import experiment
from genrec.training.loop import fit, seed_everything

__all__ = ["train_next_item_model"]


def train_next_item_model(model_class: Callable, run_dir: str, seed: int, window_stride: int | None) -> dict:
    """Trains ``model_class(num_items=...)`` on the experiment's training sequences; returns the run's metrics.

    Args:
        model_class: a next-item model with ``max_history``, ``set_item_ids`` and ``save_pretrained``.
        run_dir: the run folder (checkpoints, logs, metrics, ``model/``).
        seed: seeds model initialisation, dropout and batch order.
        window_stride: distance between training windows (``None``: the model's ``max_history``).
    """
    seed_everything(seed)
    exp = experiment()
    model = model_class(num_items=exp.num_items)
    model.set_item_ids(exp.interactions.item_ids)
    windows = SequenceWindows(exp.split.train, model.max_history, window_stride)
    metrics = fit(model, windows, exp.evaluate_model(), run_dir=run_dir, info=exp.info, seed=seed)
    if int(os.environ.get("RANK", "0")) == 0:
        model.save_pretrained(Path(run_dir) / "model")  # the best weights, which fit leaves in the model
    return metrics
