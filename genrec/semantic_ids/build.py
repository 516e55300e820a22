"""Building semantic IDs, in process: the one path every trainer takes to get them.

* :func:`train_rqvae` (gin entry of ``genrec/trainers/rqvae_trainer.py``): item text (the dataset's
  catalogue) -> sentence embeddings (cached) -> optional per-dimension standardisation -> RQ-VAE
  trained by the shared loop (validation = codebook health over all items, every
  ``fit.eval_every_epochs``) -> the best weights encode every item -> collisions resolved ->
  ``<run dir>/semantic_ids.json``. ``metrics.json`` holds, under ``valid`` and ``test``: losses,
  per-level usage and perplexity, collision rate before resolution, and (``test``) after it, plus
  the semantic check ``shared_label_ratio``.
* :func:`build_semantic_ids` runs :func:`train_rqvae` under an RQ-VAE gin config of its own, in an
  isolated gin configuration (:func:`genrec.config.isolated_config`), so a model trainer with its
  own configuration (LC-Rec, TIGER) builds missing IDs without a child process.
* :func:`ensure_semantic_ids` is what model trainers call: load the file, building it first when it
  does not exist (once, under a file lock, in a single process even under a multi-process launch).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import gin
import numpy as np
import torch

from genrec.config import ConfigError, config_path, isolated_config
from genrec.data import ItemCatalog, Interactions
from genrec.io import file_lock
from genrec.progress import announce
from genrec.semantic_ids.collisions import (STRATEGIES, codebook_perplexity, codebook_usage, collision_rate,
                                            max_collision_group, resolve_collisions, shared_field_ratio)
from genrec.semantic_ids.embed import embed_texts
from genrec.semantic_ids.rqvae import RQVAE
from genrec.semantic_ids.semantic_ids import SemanticIDs
from genrec.training import ArrayDataset, experiment, fit, seed_everything, single_process
from genrec.training.checkpoint import load_tensors

__all__ = ["SEMANTIC_IDS", "build_semantic_ids", "ensure_semantic_ids", "item_vectors", "semantic_id_report",
           "train_rqvae"]

SEMANTIC_IDS = "semantic_ids.json"


def _labels(catalog: ItemCatalog, field: str | None) -> list[set[str]] | None:
    if not field or field not in catalog.fields:
        return None
    return [set(filter(None, value.split(", "))) for value in catalog.fields[field][1:]]


def item_vectors(catalog: ItemCatalog, standardize: bool, source: str = "text",
                 interactions: Interactions | None = None) -> torch.Tensor:
    """[N, D] item vectors (row i-1 = item i) for the RQ-VAE, optionally standardised per dimension.

    Args:
        catalog: the items' text.
        standardize: zero mean and unit variance per dimension (each part on its own).
        source: ``text`` (sentence embeddings of the catalogue text, TIGER's choice),
            ``collaborative:<run dir>`` (the item embedding table of a trained scoring model's run
            folder, e.g. SASRec's ``item_emb.weight`` in its ``best.safetensors``: codes then follow
            co-occurrence rather than text), or ``text+collaborative:<run dir>`` (both, concatenated).
        interactions: the data the collaborative run must have been trained on (its fingerprint).
    """
    parts = []
    for part in source.split("+"):
        if part == "text":
            x = torch.from_numpy(embed_texts(catalog.texts(require_text=True)))
        elif part.startswith("collaborative:"):
            x = collaborative_vectors(Path(part[len("collaborative:"):]), len(catalog.texts()), interactions)
        else:
            raise ValueError(f"unknown train_rqvae.item_source part {part!r}; use 'text', 'collaborative:<run dir>' "
                             "or both joined by '+'")
        parts.append((x - x.mean(0)) / x.std(0).clamp(min=1e-6) if standardize else x)
    return torch.cat(parts, dim=1)


def collaborative_vectors(run_dir: Path, num_items: int, interactions: Interactions | None) -> torch.Tensor:
    """[N, D] rows 1..N of the ``*item_emb.weight`` table in ``run_dir/best.safetensors``.

    Raises:
        ValueError: no such run, no item table, a table for another number of items, or a run
            trained on other data (its ``metrics.json`` fingerprint).
    """
    best = run_dir / "best.safetensors"
    if not best.is_file():
        raise ValueError(f"collaborative item vectors: {best} not found; train the model first (e.g. "
                         "genrec/trainers/sasrec_trainer.py config/sasrec/ml100k.gin) and name its run folder")
    metrics = run_dir / "metrics.json"
    if interactions is not None and metrics.is_file():
        recorded = json.loads(metrics.read_text()).get("fingerprint")
        if recorded != interactions.fingerprint():
            raise ValueError(f"collaborative item vectors: {run_dir} was trained on other data (fingerprint "
                             f"{recorded}, this data {interactions.fingerprint()})")
    tensors, _ = load_tensors(best)
    tables = [key for key in tensors if key.endswith("item_emb.weight")]
    if len(tables) != 1 or tensors[tables[0]].shape[0] != num_items + 1:
        raise ValueError(f"collaborative item vectors: {best} has no single item table of {num_items + 1} rows "
                         f"(found {[(k, tuple(tensors[k].shape)) for k in tables]})")
    return tensors[tables[0]][1:].float()


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
                standardize: bool = True, label_field: str | None = "genres", item_source: str = "text") -> dict:
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
        item_source: what the RQ-VAE encodes: ``text`` (default), ``collaborative:<run dir>`` or
            ``text+collaborative:<run dir>`` (:func:`item_vectors`).
    """
    if collision_strategy not in STRATEGIES:
        raise ValueError(f"unknown train_rqvae.collision_strategy {collision_strategy!r}; use one of "
                         f"{', '.join(STRATEGIES)}")
    seed_everything(seed)
    exp = experiment()
    x = item_vectors(exp.catalog, standardize, item_source, exp.interactions)
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
        SemanticIDs.from_codes(codes, sizes, exp.interactions).save(Path(run_dir) / SEMANTIC_IDS)
    return metrics


def build_semantic_ids(rqvae_config: str | Path, run_dir: str | Path) -> dict:
    """Trains the RQ-VAE of gin file ``rqvae_config`` into ``run_dir`` (writing ``semantic_ids.json``
    there) in an isolated gin configuration; the caller's configuration is restored afterwards.

    Returns:
        The RQ-VAE run's metrics.
    """
    if not config_path(rqvae_config).is_file():
        raise ConfigError(f"RQ-VAE config {rqvae_config} not found (a path relative to the current directory or "
                          "to the repository root)")
    with isolated_config([rqvae_config], [f"train_rqvae.run_dir = {str(run_dir)!r}"]):
        return train_rqvae()


def ensure_semantic_ids(path: str | Path, rqvae_config: str | Path | None, interactions: Interactions) -> SemanticIDs:
    """Loads the semantic IDs at ``path`` for ``interactions``, building them first when missing.

    The build (:func:`build_semantic_ids` with ``rqvae_config``, into ``path``'s folder) happens once:
    under a multi-process launch, or when two runs start together, the first process to take the
    folder's lock builds them in a single process and the others wait, then load the same file.

    Raises:
        ConfigError: the file is missing and ``rqvae_config`` is None, or ``path`` is not named
            ``semantic_ids.json`` (the name the RQ-VAE run writes).
        SemanticIDsError: the file is unusable or was made for other data.
    """
    path = Path(path)
    if not path.is_file():
        if rqvae_config is None:
            raise ConfigError(f"semantic IDs {path} do not exist and no RQ-VAE config is named to build them; "
                              "build them with genrec/trainers/rqvae_trainer.py or name an RQ-VAE config")
        if path.name != SEMANTIC_IDS:
            raise ConfigError(f"semantic IDs to build must be named {SEMANTIC_IDS}, got {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(path.parent / ".build.lock"):
            if not path.is_file():
                announce("semantic IDs", f"{path} does not exist yet; building it with {rqvae_config}")
                with single_process():
                    build_semantic_ids(rqvae_config, path.parent)
    return SemanticIDs.load(path, interactions)
