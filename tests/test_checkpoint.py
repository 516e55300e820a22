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


def test_streamed_file_is_plain_safetensors(tmp_path):
    """write_safetensors writes tensor by tensor; safetensors itself reads every dtype, shape and the metadata back."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from genrec.training.checkpoint import write_safetensors

    w = torch.randn(4, 3)
    tensors = {"w": w, "tied": w, "strided": torch.randn(3, 5).t().contiguous(), "ids": torch.arange(7),
               "mask": torch.tensor([True, False, True]), "half": torch.randn(3).bfloat16(),
               "byte": torch.arange(5, dtype=torch.uint8),
               "empty": torch.empty(0, 4), "scalar": torch.tensor(2.5, dtype=torch.float64)}
    write_safetensors(tmp_path / "s.safetensors", tensors, {"note": "x"})
    loaded = load_file(str(tmp_path / "s.safetensors"))
    assert set(loaded) == set(tensors)
    for key, value in tensors.items():
        assert loaded[key].dtype == value.dtype and loaded[key].shape == value.shape and torch.equal(loaded[key], value)
    with safe_open(str(tmp_path / "s.safetensors"), framework="pt") as f:
        assert f.metadata() == {"note": "x"}
    with pytest.raises(TypeError, match="complex64"):
        write_safetensors(tmp_path / "c.safetensors", {"z": torch.zeros(2, dtype=torch.complex64)})


def test_load_trainable_file_streams_into_the_model_and_refuses_bad_files(tmp_path):
    from genrec.training.checkpoint import load_trainable_file, trainable_state_dict

    model, _, _ = _setup()
    save_tensors(tmp_path / "best.safetensors", trainable_state_dict(model), {"step": 7})
    other, _, _ = _setup()
    for p in other.parameters():
        p.data.zero_()
    assert load_trainable_file(other, tmp_path / "best.safetensors") == {"step": 7}
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    # an altered tensor: refused by the checksum before the model changes
    raw = bytearray((tmp_path / "best.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (tmp_path / "bad.safetensors").write_bytes(bytes(raw))
    before = [p.detach().clone() for p in other.parameters()]
    with pytest.raises(ValueError, match="corrupt"):
        load_trainable_file(other, tmp_path / "bad.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(before, other.parameters()))
    with pytest.raises(ValueError, match="does not match the model"):
        load_trainable_file(torch.nn.Linear(4, 3), tmp_path / "best.safetensors")
    with pytest.raises(FileNotFoundError):
        load_trainable_file(other, tmp_path / "missing.safetensors")


def test_reader_takes_files_safetensors_wrote_and_refuses_truncated_or_inconsistent_ones(tmp_path):
    """load_tensors reads the format itself (no memory map): a file from safetensors' own writer loads
    with every dtype and shape; a cut file, or a header whose offsets do not fit, is named corrupt."""
    import json

    from safetensors.torch import save_file

    tensors = {"w": torch.randn(4, 3), "ids": torch.arange(7), "mask": torch.tensor([True, False]),
               "half": torch.randn(3).bfloat16(), "empty": torch.empty(0, 2), "scalar": torch.tensor(1.5)}
    save_file(tensors, str(tmp_path / "theirs.safetensors"), metadata={"genrec": json.dumps({"k": 2})})
    loaded, meta = load_tensors(tmp_path / "theirs.safetensors")
    assert meta == {"k": 2} and set(loaded) == set(tensors)
    for key, value in tensors.items():
        assert loaded[key].dtype == value.dtype and torch.equal(loaded[key], value)
    save_tensors(tmp_path / "ours.safetensors", {"a": torch.randn(64)})
    raw = (tmp_path / "ours.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(raw[:-8])
    with pytest.raises(ValueError, match="corrupt.*inside the file"):
        load_tensors(tmp_path / "cut.safetensors")
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + length])
    for shape in ([65], [10 ** 12], [-64]):  # refused before any allocation, however large the claim
        header["a"]["shape"] = shape
        encoded = json.dumps(header).encode()
        (tmp_path / "shape.safetensors").write_bytes(len(encoded).to_bytes(8, "little") + encoded + raw[8 + length:])
        with pytest.raises(ValueError, match="corrupt.*do not hold"):
            load_tensors(tmp_path / "shape.safetensors")
