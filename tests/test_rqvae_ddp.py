"""The RQ-VAE under 2-process DDP: codebooks initialised and replaced on rank 0 stay identical on every rank."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genrec.training.checkpoint import load_tensors

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_process_rqvae_keeps_codebooks_identical(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "tests/ddp_rqvae_worker.py", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rank0, meta0 = load_tensors(tmp_path / "rank0.safetensors")
    rank1, meta1 = load_tensors(tmp_path / "rank1.safetensors")
    assert meta0["world"] == meta1["world"] == 2
    assert bool(rank0["initialized"]) and int(rank0["replaced_codes"].sum()) > 0  # init and replacement happened
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0), [k for k in rank0 if not torch.equal(rank0[k], rank1[k])]
