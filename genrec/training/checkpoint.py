"""Complete, atomic, code-free checkpoints in one safetensors file.

A checkpoint holds everything needed to resume a run exactly (STYLE.md, lesson 6): model weights,
optimizer state, scheduler state, the RNG states of python, numpy and torch, and the loop's own
state (epoch, step, best metric, patience). Tensors go into the safetensors body; everything else
is JSON in the safetensors metadata. Loading therefore never executes code.

Files are written to a temporary name in the same folder and renamed over the target
(:func:`genrec.io.atomic_path`), so a kill at any moment leaves either the previous checkpoint or the
new one, never a torn file. The metadata records a sha256 of every tensor's bytes, checked on load,
so a file damaged later (disk, copy) is refused instead of resuming from wrong weights.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from genrec.io import atomic_path

__all__ = ["save_tensors", "load_tensors", "save_checkpoint", "load_checkpoint",
           "rng_state", "set_rng_state", "trainable_state_dict", "load_trainable_state"]


_FIX = ("delete it to start that run again (a run's checkpoint), or save the model again / re-run the trainer that "
        "wrote it (a saved model)")


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None) -> None:
    """Atomically saves tensors (made contiguous, on CPU) and JSON metadata to a safetensors file."""
    body, seen = {}, set()
    for key, value in tensors.items():
        value = value.detach().to("cpu").contiguous()
        if value.numel() and value.data_ptr() in seen:  # tied weights: safetensors refuses shared memory
            value = value.clone()
        seen.add(value.data_ptr())
        body[key] = value
    meta = {"genrec": json.dumps(metadata or {}), "sha256": _digest(body)}
    with atomic_path(path) as tmp:
        save_file(body, str(tmp), metadata=meta)


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Loads a file written by :func:`save_tensors`; a clear error when it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        meta, recorded = json.loads(header.get("genrec", "{}")), header.get("sha256")
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"checkpoint {path} is corrupt or not a genrec safetensors file ({err}); "
                         f"{_FIX}") from err
    if recorded is not None and recorded != _digest(tensors):
        raise ValueError(f"checkpoint {path} is corrupt: its tensors do not match the checksum written with them; "
                         f"{_FIX}")
    return tensors, meta


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        value = tensors[key].detach().to("cpu").contiguous()
        digest.update(f"{key}|{value.dtype}|{tuple(value.shape)}|".encode())
        if value.numel():
            digest.update(value.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The RNG states of python, numpy, torch (and CUDA) as (tensors, json)."""
    np_state = np.random.get_state()
    tensors = {"rng.torch": torch.get_rng_state(), "rng.numpy": torch.from_numpy(np_state[1].astype(np.int64))}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    py = random.getstate()
    meta = {"python": [py[0], list(py[1]), py[2]], "numpy": [np_state[0], int(np_state[2]), int(np_state[3]),
                                                           float(np_state[4])]}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Restores the states captured by :func:`rng_state`."""
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    version, state, gauss = meta["python"]
    random.setstate((version, tuple(state), gauss))
    kind, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))


def _split_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, scalars = {}, {}
    for idx, per_param in state["state"].items():
        for key, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    for name, value in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def trainable_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state that training can change: every entry but frozen parameters (buffers included).

    A frozen parameter keeps the value the model was built with, so a run that rebuilds the model
    the same way gets it back; leaving it out keeps an LLM fine-tuned with LoRA from writing its
    whole base model into every checkpoint.
    """
    state = model.state_dict(keep_vars=True)
    return {k: v.detach() for k, v in state.items() if not (isinstance(v, torch.nn.Parameter) and not v.requires_grad)}


def load_trainable_state(model: torch.nn.Module, tensors: dict[str, torch.Tensor], where: str = "checkpoint") -> None:
    """Loads what :func:`trainable_state_dict` saved; every trainable entry must be present."""
    expected = set(trainable_state_dict(model))
    missing, unexpected = expected - set(tensors), set(tensors) - set(model.state_dict())
    if missing or unexpected:
        raise ValueError(f"{where} does not match the model: missing {sorted(missing)[:3]}, unexpected "
                         f"{sorted(unexpected)[:3]}; it was written for another model or config; delete it to start over")
    model.load_state_dict(tensors, strict=False)


def save_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, loop_state: dict[str, Any]) -> None:
    """Saves model, optimizer, scheduler, RNG and loop state to one safetensors file, atomically."""
    tensors = {f"model.{k}": v for k, v in trainable_state_dict(model).items()}
    optim_tensors, optim_meta = _split_optimizer(optimizer.state_dict())
    rng_tensors, rng_meta = rng_state()
    tensors.update(optim_tensors)
    tensors.update(rng_tensors)
    meta = {"loop": loop_state, "optimizer": optim_meta, "scheduler": scheduler.state_dict(), "rng": rng_meta}
    save_tensors(path, tensors, meta)


def load_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any) -> dict[str, Any]:
    """Restores what :func:`save_checkpoint` saved; returns the loop state."""
    tensors, meta = load_tensors(path)
    load_trainable_state(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, str(path))
    optimizer.load_state_dict(_join_optimizer({k: v for k, v in tensors.items() if k.startswith("optim.")},
                                              meta["optimizer"]))
    scheduler.load_state_dict(meta["scheduler"])
    set_rng_state({k: v for k, v in tensors.items() if k.startswith("rng.")}, meta["rng"])
    return meta["loop"]
