"""RQ-VAE: an item embedding -> a short tuple of codes (TIGER, arXiv 2305.05065; LC-Rec, arXiv 2311.09049).

An MLP encoder maps an item's text embedding x [D_in] to a latent z [D]. Residual quantisation
then picks one code per level: level 0 takes the codebook vector e_0 nearest to z, level 1 the one
nearest to the residual z - e_0, and so on for C levels; the decoder reconstructs x from the sum of
the chosen vectors. Items with similar text share code prefixes, which is what generative
recommenders exploit.

Training (per batch, ``forward``):

* **k-means initialisation.** On the first training batch each level's codebook is set to the
  k-means centroids (faiss) of that level's residuals, level by level; the ``initialized`` buffer
  guards it, so it runs once and a resumed run (which loads the buffer) never redoes it. Under DDP
  rank 0's centroids are broadcast, so every rank starts from the same codebooks.
* **Loss** = MSE(reconstruction, x) + sum over levels of ``||sg(r) - e||^2 + beta ||r - sg(e)||^2``
  (codebook + commitment terms, both as means), with straight-through gradients from the decoder
  to the encoder: ``z_q = z + sg(sum e - z)``.
* **Sinkhorn levels** (optional, LC-Rec's "uniform semantic mapping"): on the listed levels the
  training assignment is the argmax of a balanced Sinkhorn plan instead of the nearest code
  (:mod:`genrec.semantic_ids.sinkhorn`). Inference always uses the nearest code.
* **Dead-code replacement.** A code that no item of the last ``dead_code_steps`` training batches
  chose is replaced by a random residual of the current batch (vector-quantize-pytorch's expiry),
  so codebook usage does not collapse. Counts are all-reduced and replacements broadcast from rank
  0 under DDP, so ranks never diverge.

Every call returns the same structure, ``(RQVAEOutput(reconstruction, codes, losses), loss)``, and
:meth:`RQVAE.decode` maps codes back to a reconstructed embedding.

Shapes: B batch, C levels, V codes of a level, D latent width.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple, Sequence

import gin
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genrec.semantic_ids.sinkhorn import sinkhorn_assign

__all__ = ["RQVAE", "RQVAEOutput", "kmeans"]


class RQVAEOutput(NamedTuple):
    """What :meth:`RQVAE.forward` returns besides the loss.

    Attributes:
        reconstruction: [B, D_in] decoded embeddings.
        codes: [B, C] int64 code per level.
        losses: ``{"reconstruction", "quantization"}`` scalar tensors.
    """

    reconstruction: torch.Tensor
    codes: torch.Tensor
    losses: dict[str, torch.Tensor]


def kmeans(x: torch.Tensor, k: int, iterations: int = 25, seed: int = 0) -> torch.Tensor:
    """k-means centroids [k, D] of the rows of ``x`` [B, D] (faiss, CPU); needs B >= k."""
    import faiss

    if x.shape[0] < k:
        raise ValueError(f"k-means initialisation of a codebook of {k} codes needs at least {k} vectors, got "
                         f"{x.shape[0]}: raise fit.batch_size (the first training batch initialises the codebooks) "
                         "or use smaller RQVAE.codebook_sizes")
    data = np.ascontiguousarray(x.detach().float().cpu().numpy())
    km = faiss.Kmeans(data.shape[1], k, niter=iterations, seed=seed, verbose=False)
    km.cp.min_points_per_centroid = 1  # small catalogues are fine; silence faiss' "please provide more" warning
    km.cp.max_points_per_centroid = max(256, data.shape[0])
    km.train(data)
    return torch.from_numpy(km.centroids).to(x.device, x.dtype)


def _mlp(dims: Sequence[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(dims) - 2:
            layers += [nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() \
        and torch.distributed.get_world_size() > 1


def _from_rank0(tensor: torch.Tensor) -> torch.Tensor:
    if _distributed():
        torch.distributed.broadcast(tensor, src=0)
    return tensor


def squared_distances(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """||x_b - e_v||^2 [B, V] for x [B, D] and a codebook [V, D] (no gradient)."""
    x, codebook = x.detach(), codebook.detach()
    return (x * x).sum(-1, keepdim=True) - 2 * x @ codebook.T + (codebook * codebook).sum(-1)


@gin.configurable(denylist=["input_dim"])
class RQVAE(nn.Module):
    """Residual-quantised autoencoder over item embeddings.

    Args:
        input_dim: D_in, width of the item embeddings (from the data, never from gin).
        hidden_dims: encoder widths between input and latent; the decoder mirrors them.
        latent_dim: D, width of the latent and of every codebook vector.
        codebook_sizes: V per level; its length is the number of levels C.
        beta: commitment weight.
        dropout: dropout between MLP layers.
        sinkhorn_levels: levels whose training assignment is balanced by Sinkhorn (LC-Rec: the last).
        sinkhorn_epsilon: Sinkhorn entropy weight (on costs rescaled to [-1, 1]).
        sinkhorn_iterations: Sinkhorn normalisation rounds.
        kmeans_iterations: Lloyd iterations of the codebook initialisation.
        dead_code_steps: replace a code unused for this many training batches (0: never).
        seed: seed of the k-means initialisation.
    """

    def __init__(self, input_dim: int, hidden_dims: Sequence[int] = (512, 256, 128), latent_dim: int = 32,
                 codebook_sizes: Sequence[int] = (256, 256, 256), beta: float = 0.25, dropout: float = 0.0,
                 sinkhorn_levels: Sequence[int] = (), sinkhorn_epsilon: float = 0.003,
                 sinkhorn_iterations: int = 50, kmeans_iterations: int = 25, dead_code_steps: int = 50,
                 seed: int = 0):
        super().__init__()
        if not _positive_ints(codebook_sizes, allow_empty=False):
            raise ValueError(f"RQVAE.codebook_sizes must be a non-empty list of positive sizes, got {codebook_sizes!r}")
        if not _positive_ints(hidden_dims) or not _positive_ints([latent_dim, input_dim]):
            raise ValueError(f"RQVAE.hidden_dims ({hidden_dims!r}) and RQVAE.latent_dim ({latent_dim!r}) must be positive "
                             f"ints (input_dim {input_dim!r} comes from the embeddings)")
        reals = {"beta": beta, "dropout": dropout, "sinkhorn_epsilon": sinkhorn_epsilon}
        if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                   for v in reals.values()) or dropout >= 1 or sinkhorn_epsilon == 0:
            raise ValueError(f"RQVAE.beta >= 0, 0 <= RQVAE.dropout < 1 and RQVAE.sinkhorn_epsilon > 0 are needed, got "
                             f"{reals}")
        if not _positive_ints([sinkhorn_iterations, kmeans_iterations]) or not _positive_ints([dead_code_steps + 1]):
            raise ValueError(f"RQVAE.sinkhorn_iterations ({sinkhorn_iterations!r}) and kmeans_iterations "
                             f"({kmeans_iterations!r}) must be positive ints, dead_code_steps ({dead_code_steps!r}) >= 0")
        if not isinstance(sinkhorn_levels, (list, tuple)) or not all(isinstance(v, numbers.Integral) for v in sinkhorn_levels):
            raise ValueError(f"RQVAE.sinkhorn_levels must be a list of level indices, got {sinkhorn_levels!r}")
        bad = [level for level in sinkhorn_levels if not 0 <= level < len(codebook_sizes)]
        if bad:
            raise ValueError(f"RQVAE.sinkhorn_levels {list(sinkhorn_levels)} name levels outside 0..{len(codebook_sizes) - 1}")
        self.codebook_sizes = [int(v) for v in codebook_sizes]
        self.beta, self.dead_code_steps = beta, dead_code_steps
        self.sinkhorn_levels = set(sinkhorn_levels)
        self.sinkhorn_epsilon, self.sinkhorn_iterations = sinkhorn_epsilon, sinkhorn_iterations
        self.kmeans_iterations, self.seed = kmeans_iterations, seed
        dims = [input_dim, *hidden_dims, latent_dim]
        self.encoder = _mlp(dims, dropout)
        self.decoder = _mlp(dims[::-1], dropout)
        self.codebooks = nn.ParameterList(nn.Parameter(torch.zeros(v, latent_dim)) for v in self.codebook_sizes)
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("unused_steps", torch.zeros(len(self.codebook_sizes), max(self.codebook_sizes),
                                                         dtype=torch.long))
        self.register_buffer("replaced_codes", torch.zeros(len(self.codebook_sizes), dtype=torch.long))

    @property
    def num_levels(self) -> int:
        return len(self.codebook_sizes)

    def forward(self, embeddings: torch.Tensor) -> tuple[RQVAEOutput, torch.Tensor]:
        """Args: embeddings [B, D_in]. Returns ``(RQVAEOutput, loss)``."""
        z = self.encoder(embeddings)
        if self.training and not bool(self.initialized):
            self.initialize_codebooks(z)
        residual, quantized = z, torch.zeros_like(z)
        codes, residuals, quantization = [], [], z.new_zeros(())
        for level, codebook in enumerate(self.codebooks):
            distances = squared_distances(residual, codebook)
            if self.training and level in self.sinkhorn_levels:
                code = sinkhorn_assign(distances, self.sinkhorn_epsilon, self.sinkhorn_iterations)
            else:
                code = distances.argmin(dim=-1)
            # A one-hot matmul, not codebook[code]: the backward of indexing accumulates rows in a
            # thread-dependent order on CPU, which makes identical runs drift apart.
            chosen = F.one_hot(code, codebook.shape[0]).to(codebook.dtype) @ codebook
            quantization = quantization + F.mse_loss(chosen, residual.detach()) \
                + self.beta * F.mse_loss(residual, chosen.detach())
            codes.append(code)
            residuals.append(residual.detach())
            quantized = quantized + chosen
            residual = residual - chosen.detach()
        z_q = z + (quantized - z).detach()  # straight-through: decoder gradients reach the encoder
        reconstruction = self.decoder(z_q)
        losses = {"reconstruction": F.mse_loss(reconstruction, embeddings), "quantization": quantization}
        if self.training and self.dead_code_steps > 0:
            self._replace_dead_codes(codes, residuals)
        codes = torch.stack(codes, dim=-1)
        return RQVAEOutput(reconstruction, codes, losses), losses["reconstruction"] + quantization

    @torch.no_grad()
    def initialize_codebooks(self, z: torch.Tensor) -> None:
        """k-means of each level's residuals of latents z [B, D], level by level; sets ``initialized``."""
        residual = z.detach()
        for codebook in self.codebooks:
            centroids = _from_rank0(kmeans(residual, codebook.shape[0], self.kmeans_iterations, self.seed))
            codebook.data.copy_(centroids)
            residual = residual - centroids[squared_distances(residual, centroids).argmin(dim=-1)]
        self.initialized.fill_(True)

    @torch.no_grad()
    def _replace_dead_codes(self, codes: list[torch.Tensor], residuals: list[torch.Tensor]) -> None:
        for level, (code, residual, codebook) in enumerate(zip(codes, residuals, self.codebooks)):
            size = codebook.shape[0]
            counts = torch.bincount(code, minlength=size)
            if _distributed():
                torch.distributed.all_reduce(counts)
            unused = self.unused_steps[level, :size]
            unused.copy_(torch.where(counts > 0, torch.zeros_like(unused), unused + 1))
            dead = (unused >= self.dead_code_steps).nonzero().flatten()
            if len(dead):
                picks = torch.randint(0, residual.shape[0], (len(dead),), device=residual.device)
                codebook.data[dead] = _from_rank0(residual[picks].clone())
                unused[dead] = 0
                self.replaced_codes[level] += len(dead)

    @torch.no_grad()
    def encode(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Nearest-code assignment (no Sinkhorn, no training side effects).

        Returns:
            codes [B, C] int64, and per level the squared distances [B, V] of that level's
            residual to every code (collision resolution re-assigns on the last one).
        """
        residual = self.encoder(embeddings)
        codes, distances = [], []
        for codebook in self.codebooks:
            d = squared_distances(residual, codebook)
            code = d.argmin(dim=-1)
            residual = residual - codebook[code]
            codes.append(code)
            distances.append(d)
        return torch.stack(codes, dim=-1), distances

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Reconstructed embeddings [B, D_in] from codes [B, C] (the inverse path of the quantiser)."""
        if codes.ndim != 2 or codes.shape[1] != self.num_levels:
            raise ValueError(f"decode expects codes of shape [B, {self.num_levels}], got {tuple(codes.shape)}")
        for level, size in enumerate(self.codebook_sizes):
            column = codes[:, level]
            if len(column) and (column.min() < 0 or column.max() >= size):
                raise ValueError(f"level {level} codes must lie in 0..{size - 1}")
        quantized = sum(codebook[codes[:, level]] for level, codebook in enumerate(self.codebooks))
        return self.decoder(quantized)


def _positive_ints(values, allow_empty: bool = True) -> bool:
    """Whether ``values`` is a list/tuple of ints >= 1 (bools excluded)."""
    return (isinstance(values, (list, tuple)) and (allow_empty or len(values) > 0)
            and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in values))
