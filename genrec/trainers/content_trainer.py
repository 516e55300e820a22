"""Train and evaluate a content-based recommender (content operator x behavior operator x click predictor).

    python genrec/trainers/content_trainer.py config/content/ml100k/nrms_debug.gin [--gin "fit.max_steps = 100"]

Steps: the experiment's data and split (ml-100k / ml-1m, leave-one-out by default) -> item texts from
the catalogue (title, year, genres) -> :class:`genrec.models.content.ContentRecommender` built from the
operators the gin file names -> one training example per (user, position) of the training sequences
-> the shared loop (negative sampling or BCE, valid every epoch or every N steps, early stopping) ->
full-ranking metrics on valid (model selection) and test from the shared evaluator, with the
evaluation cache (every item encoded once per evaluation) -> the best weights in ``<run dir>/model/``
(``ContentRecommender.save_pretrained``).

MIND (``experiment.dataset = "mind:<folder>"``, ``experiment.split = "impressions"``,
``config/content/mind/*.gin``): every news is an item (its title, category, subcategory and
abstract); one training example per click of a training impression, whose K negatives are drawn
from the non-clicked news of the same impression at every step (NRMS); valid and test score every
candidate of each impression -> AUC, MRR, nDCG@5/10 per impression and GAUC per user.

    python genrec/trainers/content_trainer.py config/content/mind/nrms.gin
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
from genrec.data.mind_small import IMPRESSION_SPLIT, ImpressionExamples
from genrec.data.windows import history_examples
from genrec.models.content import ContentRecommender
from genrec.training import ArrayDataset, experiment, fit, seed_everything


@gin.configurable
def train_content(run_dir: str = "runs/content", seed: int = 2020) -> dict:
    """Trains a content-based recommender end to end; returns the metrics of the run.

    Args:
        run_dir: the run folder (checkpoints, logs, metrics).
        seed: seeds model initialisation, negative sampling, dropout and batch order.
    """
    seed_everything(seed)
    exp = experiment(scores_impressions=True)
    model = ContentRecommender(texts=exp.catalog.texts(require_text=True))
    model.set_item_ids(exp.catalog.item_ids)
    if exp.impressions is not None:  # MIND: clicks against the non-clicked news of their impression
        examples = ImpressionExamples(exp.impressions, model.max_history)
        collate = ImpressionExamples.collate
    else:
        examples, collate = history_examples(exp.split.train, model.max_history), ArrayDataset.collate
    info = {**exp.info, "training_examples": len(examples),
            "operators": {kind: type(getattr(model, kind)).__name__
                          for kind in ("item_encoder", "user_encoder", "predictor")},
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    metrics = fit(model, examples, exp.evaluate_model(), run_dir=run_dir, info=info, seed=seed,
                  collate_fn=collate)
    if int(os.environ.get("RANK", "0")) == 0:
        model.save_pretrained(Path(run_dir) / "model")  # the best weights, which fit leaves in the model
    return metrics


if __name__ == "__main__":
    metrics = run(train_content, splits=[*SPLITS, IMPRESSION_SPLIT])
    print(json.dumps({"valid": metrics["valid"], "test": metrics["test"]}, indent=2))
