"""Complete, atomic, code-free checkpoints in one safetensors file.

A checkpoint holds everything needed to resume a run exactly (STYLE.md, lesson 6): model weights,
optimizer state, scheduler state, the RNG states of python, numpy and torch, and the loop's own
state (epoch, step, best metric, patience). Tensors go into the safetensors body; everything else
is JSON in the safetensors metadata. Loading therefore never executes code.

Files are written to a temporary name in the same folder and renamed over the target
(:func:`genrec.io.atomic_path`), so a kill at any moment leaves either the previous checkpoint or the
new one, never a torn file. The metadata records a sha256 of every tensor's bytes, checked on load,
so a file damaged later (disk, copy) is refused instead of resuming from wrong weights.

The file is written one tensor at a time (:func:`write_safetensors`), so saving costs no copy of
the tensors: ``safetensors.torch.save_file`` first turns every tensor into bytes, which for a full
fine-tuning checkpoint (weights + AdamW state) doubled the process's resident memory while it saved.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genrec.io import atomic_path

__all__ = ["write_safetensors", "save_tensors", "load_tensors", "save_checkpoint", "load_checkpoint",
           "rng_state", "set_rng_state", "trainable_state_dict", "load_trainable_state", "load_trainable_file"]


_FIX = ("delete it to start that run again (a run's checkpoint), or save the model again / re-run the trainer that "
        "wrote it (a saved model)")


_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
           torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
           torch.bool: "BOOL", torch.uint16: "U16", torch.uint32: "U32", torch.uint64: "U64",
           torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2"}
_DTYPE_OF = {name: dtype for dtype, name in _DTYPES.items()}


def write_safetensors(path: str | Path, tensors: dict[str, torch.Tensor],
                      metadata: dict[str, str] | None = None) -> None:
    """Writes ``tensors`` (CPU, contiguous) and string ``metadata`` to ``path`` in the safetensors format,
    one tensor at a time: no copy of the tensors is made, and tensors sharing memory (tied weights) are
    simply written twice. Readable by ``safetensors.torch.load_file``; not atomic (see :func:`save_tensors`)."""
    unknown = sorted({str(v.dtype) for v in tensors.values() if v.dtype not in _DTYPES})
    if unknown:
        raise TypeError(f"cannot save tensors of dtype {', '.join(unknown)} in a safetensors file")
    # widest dtypes first, as safetensors orders them, so every tensor starts aligned to its item size
    order = sorted(tensors, key=lambda k: (-tensors[k].element_size(), k))
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for key in order:
        size = tensors[key].numel() * tensors[key].element_size()
        header[key] = {"dtype": _DTYPES[tensors[key].dtype], "shape": list(tensors[key].shape),
                       "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as handle:
        handle.write(len(encoded).to_bytes(8, "little"))
        handle.write(encoded)
        for key in order:
            if tensors[key].numel():
                handle.write(tensors[key].reshape(-1).view(torch.uint8).numpy().data)


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None) -> None:
    """Atomically saves tensors (made contiguous, on CPU) and JSON metadata to a safetensors file."""
    body = {key: value.detach().to("cpu").contiguous() for key, value in tensors.items()}
    meta = {"genrec": json.dumps(metadata or {}), "sha256": _digest(body)}
    with atomic_path(path) as tmp:
        write_safetensors(tmp, body, meta)


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Loads a file written by :func:`save_tensors`; a clear error when it is missing or corrupt."""
    tensors: dict[str, torch.Tensor] = {}
    meta = _read(path, tensors.__setitem__)
    return tensors, meta


def _read(path: str | Path, each, check: bool = True) -> dict[str, Any]:
    """Reads a :func:`save_tensors` file one tensor at a time, in name order, calling ``each(name, tensor)``;
    checks the recorded checksum when ``check``; returns the JSON metadata.

    Plain reads, not a memory map: the pages of a mapped file stay resident while it is open, so
    reading a 0.5 GB best-weights file through ``safe_open`` held 0.5 GB more until the last tensor."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            size = path.stat().st_size
            length = int.from_bytes(handle.read(8), "little")
            if not 0 < length <= size - 8:
                raise ValueError(f"header length {length} does not fit a {size}-byte file")
            header = json.loads(handle.read(length))
            strings = header.pop("__metadata__", None) or {}
            for key in sorted(header):
                value = _read_tensor(handle, key, header[key], 8 + length, size)
                if check:
                    _update_digest(digest, key, value)
                each(key, value)
        meta, recorded = json.loads(strings.get("genrec", "{}")), strings.get("sha256")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"checkpoint {path} is corrupt or not a genrec safetensors file ({err!r}); "
                         f"{_FIX}") from err
    if check and recorded is not None and recorded != digest.hexdigest():
        raise ValueError(f"checkpoint {path} is corrupt: its tensors do not match the checksum written with them; "
                         f"{_FIX}")
    return meta


def _read_tensor(handle, key: str, entry: dict[str, Any], base: int, size: int) -> torch.Tensor:
    """One tensor of a safetensors body, read into fresh memory; checks its offsets against the file."""
    dtype, shape = _DTYPE_OF[entry["dtype"]], [int(n) for n in entry["shape"]]
    start, end = (int(n) for n in entry["data_offsets"])
    nbytes = math.prod(shape) * dtype.itemsize
    if min(shape, default=0) < 0 or end - start != nbytes or start < 0 or base + end > size:
        raise ValueError(f"tensor {key!r}: offsets {start}-{end} do not hold {nbytes} bytes inside the file")
    value = torch.empty(shape, dtype=dtype)  # allocated only once the file is known to hold it
    if nbytes:
        handle.seek(base + start)
        if handle.readinto(value.reshape(-1).view(torch.uint8).numpy()) != nbytes:
            raise ValueError(f"tensor {key!r} is truncated")
    return value


def _update_digest(digest, key: str, value: torch.Tensor) -> None:
    value = value.detach().to("cpu").contiguous()
    digest.update(f"{key}|{value.dtype}|{tuple(value.shape)}|".encode())
    if value.numel():
        digest.update(value.reshape(-1).view(torch.uint8).numpy())


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        _update_digest(digest, key, tensors[key])
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
    _check_names(model, set(tensors), where)
    model.load_state_dict(tensors, strict=False)


def _check_names(model: torch.nn.Module, names: set[str], where: str) -> None:
    missing, unexpected = set(trainable_state_dict(model)) - names, names - set(model.state_dict())
    if missing or unexpected:
        raise ValueError(f"{where} does not match the model: missing {sorted(missing)[:3]}, unexpected "
                         f"{sorted(unexpected)[:3]}; it was written for another model or config; delete it to start over")


def load_trainable_file(model: torch.nn.Module, path: str | Path) -> dict[str, Any]:
    """:func:`load_trainable_state` from a :func:`save_tensors` file, one tensor at a time: the file is read
    once to check its checksum, then again to copy each tensor into the model, so loading costs the
    largest tensor's memory, not a second copy of the model. Returns the file's metadata."""
    names: set[str] = set()
    meta = _read(path, lambda key, value: names.add(key))  # missing, corrupt or altered: refused before any change
    _check_names(model, names, str(path))
    state = model.state_dict()
    with torch.no_grad():
        _read(path, lambda key, value: state[key].copy_(value), check=False)
    return meta


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
