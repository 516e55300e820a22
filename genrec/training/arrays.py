"""A map-style dataset of named tensors that hands the DataLoader whole batches.

``DataLoader`` fetches a batch item by item and collates a list of dicts, which costs more than the
step itself for a small model over in-memory rows (the RQ-VAE trains thousands of epochs over a
few thousand item vectors). :class:`ArrayDataset` implements ``__getitems__``, so the loader gets
each batch with one indexing per tensor; pass :meth:`ArrayDataset.collate` as the loader's (or
:func:`genrec.training.fit`'s) ``collate_fn``.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

__all__ = ["ArrayDataset"]


class ArrayDataset(Dataset):
    """Rows of equally long tensors, e.g. ``ArrayDataset(embeddings=x)`` -> ``{"embeddings": x[i]}``."""

    def __init__(self, **tensors: torch.Tensor):
        lengths = {name: len(tensor) for name, tensor in tensors.items()}
        if not tensors or len(set(lengths.values())) != 1:
            raise ValueError(f"ArrayDataset needs at least one tensor and equal lengths, got {lengths}")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {name: tensor[i] for name, tensor in self.tensors.items()}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return {name: tensor[index] for name, tensor in self.tensors.items()}

    @staticmethod
    def collate(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch as ``__getitems__`` built it."""
        return batch
