"""Saving a model whose weights, settings and raw item ids fit one safetensors file (SASRec, HSTU).

A subclass of :class:`SingleFileModel` names its file (``weights_file``) and keeps the keyword
arguments of its constructor in ``self.settings``; ``save_pretrained(folder)`` writes
``<folder>/<weights_file>`` atomically with a checksum of the tensors
(:func:`genrec.training.checkpoint.save_tensors`), and ``from_pretrained(folder)`` rebuilds the model
from the settings, loads the weights (checked) and the raw item ids, in eval mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from genrec.data.padding import left_pad
from genrec.models.base import Recommender
from genrec.training.checkpoint import load_tensors, save_tensors

__all__ = ["ItemTableModel", "SingleFileModel"]


class SingleFileModel(Recommender):
    """A :class:`Recommender` saved as one safetensors file: ``weights_file``, ``self.settings``."""

    weights_file: ClassVar[str]

    def save_pretrained(self, folder: str | Path) -> None:
        """Writes ``<folder>/<weights_file>`` (atomically, with a checksum): the weights, with the settings
        and the raw item ids as metadata."""
        name = type(self).__name__
        if self.item_ids is None:
            raise ValueError(f"this {name} has no raw item ids; call set_item_ids(item_ids) first")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_tensors(folder / self.weights_file, self.state_dict(), {"settings": self.settings, "item_ids": self.item_ids})

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> SingleFileModel:
        """Loads a folder written by :meth:`save_pretrained` (e.g. a run's ``model/``), in eval mode."""
        name, path = cls.__name__, Path(folder) / cls.weights_file
        if not path.is_file():
            reason = "does not exist" if not Path(folder).exists() else f"has no {cls.weights_file}"
            raise FileNotFoundError(f"{folder} is not a saved {name} (it {reason}); save one with save_pretrained, "
                                    f"e.g. the model/ folder of a {name} run")
        tensors, meta = load_tensors(path)
        if "settings" not in meta:
            raise ValueError(f"{path} has no {name} settings; it was not written by {name}.save_pretrained")
        model = cls(**meta["settings"])
        model.load_state_dict(tensors)
        model.set_item_ids(meta["item_ids"])
        return model.eval()


class ItemTableModel(SingleFileModel):
    """A causal next-item model (SASRec, HSTU) that scores items against its item table ``item_emb``
    from the last hidden state of ``encode(input_ids)`` over the last ``max_history`` items."""

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores [..., N+1] of every item for hidden states [..., D]; padding column is -inf."""
        scores = hidden @ self.item_emb.weight.T
        scores[..., 0] = float("-inf")
        return scores

    @torch.no_grad()
    def score(self, histories: Sequence[np.ndarray], users: np.ndarray | None = None) -> torch.Tensor:
        """Float32 next-item scores [B, N+1] for time-ordered histories (the last ``max_history`` items
        are used; ``users`` is ignored: these models do not model users); column 0 is -inf."""
        name = type(self).__name__
        if any(len(h) == 0 for h in histories):
            raise ValueError(f"{name}.score got an empty history; it needs at least one item per user")
        input_ids = left_pad(histories, self.max_history).to(self.item_emb.weight.device)
        return self.logits(self.encode(input_ids)[:, -1].float()).float()
