"""Train and evaluate HSTU; the best weights are saved to ``<run dir>/model/`` (``HSTU.save_pretrained``).

    python genrec/trainers/hstu_trainer.py config/hstu/ml100k.gin [--split loo] [--gin "fit.max_epochs = 5"]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import gin

from genrec.config import run
from genrec.data import SPLITS
from genrec.models.hstu import HSTU
from genrec.training.next_item import train_next_item_model


@gin.configurable
def train_hstu(run_dir: str = "runs/hstu", seed: int = 2020, window_stride: int | None = None) -> dict:
    """Trains HSTU on the experiment's training sequences; returns the metrics of the run.

    Args:
        run_dir: the run folder (checkpoints, logs, metrics).
        seed: seeds model initialisation, dropout and batch order.
        window_stride: distance between training windows (default: the model's ``max_history``;
            see :class:`genrec.data.windows.SequenceWindows`).
    """
    return train_next_item_model(HSTU, run_dir, seed, window_stride)


if __name__ == "__main__":
    metrics = run(train_hstu, splits=list(SPLITS))
    print(json.dumps({"valid": metrics["valid"], "test": metrics["test"]}, indent=2))
