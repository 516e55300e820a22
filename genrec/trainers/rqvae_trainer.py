"""Train an RQ-VAE on item text embeddings and write collision-free semantic IDs.

    python genrec/trainers/rqvae_trainer.py config/rqvae/ml100k.gin [--gin "fit.max_epochs = 100"]

The entry :func:`genrec.semantic_ids.build.train_rqvae` describes the steps; model trainers that
need semantic IDs build missing ones through the same function
(:func:`genrec.semantic_ids.ensure_semantic_ids`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from genrec.config import run
from genrec.data import SPLITS
from genrec.semantic_ids.build import train_rqvae

if __name__ == "__main__":
    metrics = run(train_rqvae, splits=list(SPLITS))
    print(json.dumps({"valid": metrics["valid"], "test": metrics["test"]}, indent=2))
