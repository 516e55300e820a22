"""Train an RQ-VAE on item text embeddings and write collision-free semantic IDs.

    python genrec/trainers/rqvae_trainer.py config/rqvae/ml100k.gin [--gin "fit.max_epochs = 100"]

Steps: item text (the dataset's catalogue) -> sentence embeddings (cached) -> optional
per-dimension standardisation -> RQ-VAE trained by the shared loop (validation = codebook health
over all items, every ``fit.eval_every_epochs``) -> the best weights encode every item -> collisions
resolved -> ``<run dir>/semantic_ids.json``. ``metrics.json`` holds, under ``valid`` and ``test``:
losses, per-level usage and perplexity, collision rate before resolution, and (``test``) after it,
plus the semantic check ``shared_label_ratio``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import gin
import numpy as np
import torch

from genrec.config import run
from genrec.data import SPLITS, ItemCatalog
from genrec.semantic_ids import RQVAE, SemanticIDs, embed_texts
from genrec.semantic_ids.collisions import (STRATEGIES, codebook_perplexity, codebook_usage, collision_rate,
                                            max_collision_group, resolve_collisions, shared_field_ratio)
from genrec.training import ArrayDataset, experiment, fit, seed_everything

SEMANTIC_IDS = "semantic_ids.json"


def _labels(catalog: ItemCatalog, field: str | None) -> list[set[str]] | None:
    if not field or field not in catalog.fields:
        return None
    return [set(filter(None, value.split(", "))) for value in catalog.fields[field][1:]]


def item_vectors(catalog: ItemCatalog, standardize: bool) -> torch.Tensor:
    """[N, D] embeddings of the catalogue's item texts (row i-1 = item i), optionally standardised."""
    x = torch.from_numpy(embed_texts(catalog.texts()))
    return (x - x.mean(0)) / x.std(0).clamp(min=1e-6) if standardize else x


def semantic_id_report(model: RQVAE, embeddings: torch.Tensor, strategy: str,
                       labels: list[set[str]] | None, resolve: bool = True) -> tuple[dict, np.ndarray | None, list]:
    """Codebook health of ``model`` over all items and, with ``resolve``, the unique codes.

    Returns:
        (metrics, resolved codes [N, C'] or None, codebook sizes of the resolved codes)
    """
    device = next(model.parameters()).device
    x = embeddings.to(device)
    output, loss = model(x)
    codes, distances = model.encode(x)
    codes = codes.cpu().numpy()
    sizes = model.codebook_sizes
    metrics = {
        "loss": float(loss), "reconstruction_loss": float(output.losses["reconstruction"]),
        "quantization_loss": float(output.losses["quantization"]),
        "usage": codebook_usage(codes, sizes), "perplexity": codebook_perplexity(codes, sizes),
        "collision_rate": collision_rate(codes), "max_collision_group": max_collision_group(codes),
        "replaced_codes": model.replaced_codes.tolist(),
        "shared_label_ratio": shared_field_ratio(codes[:, 0], labels) if labels else None,
    }
    if not resolve:
        return metrics, None, sizes
    unique, unique_sizes = resolve_collisions(codes, sizes, strategy, distances[-1].cpu().numpy())
    metrics.update(collision_strategy=strategy, collision_rate_resolved=collision_rate(unique),
                   resolved_codebook_sizes=unique_sizes, changed_items=int((unique[:, :codes.shape[1]] != codes).any(1).sum()))
    return metrics, unique, unique_sizes


@gin.configurable
def train_rqvae(run_dir: str = "runs/rqvae", seed: int = 2020, collision_strategy: str = "append_level",
                standardize: bool = True, label_field: str | None = "genres") -> dict:
    """Trains the RQ-VAE, writes ``semantic_ids.json``; returns the metrics of the run.

    Args:
        run_dir: the run folder.
        seed: seeds the MLP initialisation, dead-code picks and batch order (k-means: ``RQVAE.seed``).
        collision_strategy: ``append_level`` (TIGER) or ``sinkhorn`` (LC-Rec); see
            :mod:`genrec.semantic_ids.collisions`.
        standardize: scale every embedding dimension to zero mean and unit variance over the items
            first (unit-norm sentence embeddings otherwise collapse the codebooks; see the TIGER notes).
        label_field: catalogue field of ", "-separated labels for the semantic check (``genres``
            for MovieLens, ``categories`` for Amazon); ``None`` skips it.
    """
    if collision_strategy not in STRATEGIES:
        raise ValueError(f"unknown train_rqvae.collision_strategy {collision_strategy!r}; use one of "
                         f"{', '.join(STRATEGIES)}")
    seed_everything(seed)
    exp = experiment()
    x = item_vectors(exp.catalog, standardize)
    model = RQVAE(input_dim=x.shape[1])
    labels = _labels(exp.catalog, label_field)

    def evaluate(model, which, accelerator):
        return semantic_id_report(model, x, collision_strategy, labels, resolve=which == "test")[0]

    info = {key: exp.info[key] for key in ("dataset", "fingerprint", "num_items")}  # config.gin names the encoder
    metrics = fit(model, ArrayDataset(embeddings=x), evaluate, run_dir=run_dir, info=info, seed=seed,
                  collate_fn=ArrayDataset.collate)
    model.eval()
    with torch.inference_mode():
        _, codes, sizes = semantic_id_report(model, x, collision_strategy, labels)
    if int(os.environ.get("RANK", "0")) == 0:
        ids = SemanticIDs.from_codes(codes, sizes, exp.interactions)
        ids.save(Path(run_dir) / SEMANTIC_IDS, exp.interactions.item_ids)
    return metrics


if __name__ == "__main__":
    metrics = run(train_rqvae, splits=list(SPLITS))
    print(json.dumps({"valid": metrics["valid"], "test": metrics["test"]}, indent=2))
