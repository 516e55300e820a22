"""Fine-tune a text encoder for query -> item retrieval (RecLM-emb); the best weights are saved to
``<run dir>/model/`` (:meth:`RetrievalEncoder.save_pretrained`), which ``python -m genrec.retrieve``
and the agent's soft filter load.

    python genrec/trainers/retrieval_trainer.py config/retrieval/ml100k.gin [--gin "fit.max_steps = 100"]
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
from genrec.retrieval.batches import QueryCollator, QueryDataset
from genrec.retrieval.encoder import RetrievalEncoder
from genrec.retrieval.evaluate import encoder_evaluator
from genrec.retrieval.queries import QueryGenerator
from genrec.training import experiment, fit, seed_everything


@gin.configurable
def train_retrieval(run_dir: str = "runs/retrieval", seed: int = 2020) -> dict:
    """Writes the queries of the experiment's dataset, fine-tunes the encoder with InfoNCE over
    :func:`genrec.training.fit`, and returns the metrics of the run (per query type, valid and test).

    Args:
        run_dir: the run folder (checkpoints, logs, metrics, ``model/``).
        seed: seeds the encoder's dropout and the batch order (the queries have ``QueryGenerator.seed``).
    """
    seed_everything(seed)
    exp = experiment()
    generator = QueryGenerator(exp.interactions, exp.catalog)
    queries = {which: generator.queries(which) for which in ("train", "valid", "test")}
    model = RetrievalEncoder()
    texts = [exp.catalog.text(i) for i in range(1, exp.num_items + 1)]
    info = {**exp.info, "protocol": "text queries -> item texts, full catalogue",
            "queries": {which: len(rows) for which, rows in queries.items()}}
    metrics = fit(model, QueryDataset(queries["train"]), encoder_evaluator(texts, queries), run_dir=run_dir,
                  info=info, seed=seed, collate_fn=QueryCollator(model, [""] + texts))
    if int(os.environ.get("RANK", "0")) == 0:
        model.save_pretrained(Path(run_dir) / "model")  # the best weights, which fit leaves in the model
    return metrics


if __name__ == "__main__":
    metrics = run(train_retrieval, splits=list(SPLITS))
    print(json.dumps({"valid": metrics["valid"], "test": metrics["test"]}, indent=2))
