"""Run by tests/test_rqvae_ddp.py under `torchrun --nproc_per_node 2`: a few DDP steps of the RQ-VAE on
synthetic clustered vectors, with k-means initialisation on each rank's own first batch and dead codes
replaced at every step. At every validation each rank saves the weights and buffers it holds, so the
test can check that rank 0's centroids and replacements reached every rank."""

import sys
from pathlib import Path

import gin
import torch

from genrec.semantic_ids import RQVAE
from genrec.training import ArrayDataset, fit, seed_everything
from genrec.training.checkpoint import save_tensors

out = Path(sys.argv[1])
gin.clear_config()
seed_everything(0)
centers = torch.randn(16, 12) * 3
x = centers[torch.arange(512) % 16] + 0.3 * torch.randn(512, 12)
model = RQVAE(input_dim=12, hidden_dims=[32], latent_dim=8, codebook_sizes=[32, 8], dead_code_steps=1)


def evaluate(m, which, accelerator):
    if which == "valid":
        save_tensors(out / f"rank{accelerator.process_index}.safetensors", m.state_dict(),
                     {"world": accelerator.num_processes})
    return {"loss": float(m(x)[1])}


fit(model, ArrayDataset(embeddings=x), evaluate, run_dir=out / "run", info={"dataset": "synthetic"}, seed=0,
    collate_fn=ArrayDataset.collate, batch_size=64, max_steps=6, metric="loss", mode="min", patience=None)
