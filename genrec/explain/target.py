"""The target recommender that RecExplainer imitates (and the Knowledge Plugin asks): a trained SASRec.

:func:`trained_sasrec` loads ``<run dir>/model`` when a SASRec run left one there, and otherwise trains
it first with genrec's own SASRec trainer under its gin config (by default the CPU debug recipe,
``config/sasrec/ml100k_debug.gin``, about a minute on one core), in a gin configuration of its own so
the caller's bindings are untouched.

:func:`user_vectors` is what the explainer's intention mode reads as the recommender's *user vector*:
SASRec models no user table, so a user is the last hidden state of its history, the query whose dot
product with the item table gives SASRec's scores (``score = <h_u, E_i>``); an item's vector is its
row of that table (:func:`item_vectors`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from genrec.config import isolated_config
from genrec.data.padding import left_pad
from genrec.models.sasrec import SASRec

__all__ = ["item_vectors", "trained_sasrec", "user_vectors"]


def trained_sasrec(run_dir: str | Path = "runs/explain/sasrec_debug",
                   config: str | Path = "config/sasrec/ml100k_debug.gin") -> SASRec:
    """The SASRec saved in ``<run_dir>/model`` (trained there with ``config`` first if absent), in eval mode."""
    folder = Path(run_dir) / "model"
    if not (folder / "sasrec.safetensors").is_file():
        from genrec.trainers.sasrec_trainer import train_sasrec

        with isolated_config([config]):
            train_sasrec(run_dir=str(run_dir))
    model = SASRec.from_pretrained(folder)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@torch.no_grad()
def user_vectors(model: SASRec, histories: Sequence[np.ndarray]) -> torch.Tensor:
    """Float32 [B, D]: SASRec's last hidden state after each (non-empty) history."""
    if any(len(h) == 0 for h in histories):
        raise ValueError("user_vectors needs at least one history item per user")
    ids = left_pad(histories, model.max_history).to(model.item_emb.weight.device)
    return model.encode(ids)[:, -1].float().cpu()


def item_vectors(model: SASRec) -> torch.Tensor:
    """Float32 [N+1, D]: SASRec's item table (row 0 padding)."""
    return model.item_emb.weight.detach().float().cpu()
