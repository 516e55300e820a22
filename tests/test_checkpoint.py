"""Checkpoints: atomic, code-free, complete (model, optimizer, scheduler, RNG), clear errors when corrupt."""

import random

import numpy as np
import pytest
import torch

from genrec.training.checkpoint import load_checkpoint, load_tensors, save_checkpoint, save_tensors


def _setup():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    for _ in range(3):
        model(torch.randn(5, 4)).sum().backward()
        opt.step(), sched.step(), opt.zero_grad()
    return model, opt, sched


def test_round_trip_restores_everything(tmp_path):
    model, opt, sched = _setup()
    save_checkpoint(tmp_path / "c.safetensors", model, opt, sched, {"epoch": 3, "best": 0.5})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    model2, opt2, sched2 = _setup()
    for p in model2.parameters():
        p.data.zero_()
    state = load_checkpoint(tmp_path / "c.safetensors", model2, opt2, sched2)
    assert state == {"epoch": 3, "best": 0.5}
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    assert sched2.state_dict() == sched.state_dict()
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    # RNG streams continue exactly where they were when the checkpoint was written
    assert torch.equal(torch.rand(3), expected[0]) and np.allclose(np.random.rand(3), expected[1])
    assert random.random() == expected[2]


def test_tied_weights_can_be_saved(tmp_path):
    w = torch.randn(3, 2)
    save_tensors(tmp_path / "t.safetensors", {"a": w, "b": w})
    tensors, _ = load_tensors(tmp_path / "t.safetensors")
    assert torch.equal(tensors["a"], tensors["b"])


def test_corrupt_and_missing_checkpoint(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt"):
        load_tensors(bad)
    with pytest.raises(FileNotFoundError):
        load_tensors(tmp_path / "missing.safetensors")


def test_no_temporary_files_left(tmp_path):
    save_tensors(tmp_path / "x.safetensors", {"a": torch.ones(2)}, {"k": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]
    assert load_tensors(tmp_path / "x.safetensors")[1] == {"k": 1}
