"""What a run measures about the machine: peak memory, the device's matmul peak, training throughput.

A trainer that knows the work of one epoch passes it to :func:`genrec.training.fit` as
``info["work_per_epoch"] = {"tokens": real tokens, "model_flops": model FLOPs}`` (LLM fine-tuning:
:func:`genrec.llm.flops.fine_tuning_flops`); ``metrics.json["throughput"]`` then reports tokens and
model FLOPs per second of training (validations excluded, compilation included) and the MFU against
:func:`matmul_peak`, measured on the run's device at its end.
"""

from __future__ import annotations

import resource
import sys
import time

import numpy as np
import torch

__all__ = ["matmul_peak", "peak_memory", "throughput"]


def peak_memory() -> dict[str, float]:
    """Peak resident memory of this process (and peak CUDA memory), in MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 1024**2)
    out = {"peak_rss_mib": round(rss, 1)}
    if torch.cuda.is_available():
        out["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def matmul_peak(device: torch.device | str, size: int | None = None, repeats: int = 5) -> float:
    """Measured dense matmul FLOP/s of ``device``: bf16 on CUDA, fp32 elsewhere; the median of
    ``repeats`` square products of ``size`` (default 8192 on CUDA, 2048 elsewhere) after a warm-up."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    size = size or (8192 if cuda else 2048)
    dtype = torch.bfloat16 if cuda else torch.float32
    a, b = torch.randn(size, size, device=device, dtype=dtype), torch.randn(size, size, device=device, dtype=dtype)
    times = []
    for i in range(repeats + 1):
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        a @ b
        if cuda:
            torch.cuda.synchronize(device)
        if i:
            times.append(time.perf_counter() - start)
    return 2 * size**3 / float(np.median(times))


def throughput(work_per_epoch: dict, epochs: float, seconds: float, device: torch.device, processes: int) -> dict:
    """Tokens/s, model TFLOP/s and MFU of ``epochs`` (fractional) epochs of ``work_per_epoch`` in ``seconds``
    on ``processes`` devices like ``device`` (the peak is measured on this process's device)."""
    tokens, flops = epochs * work_per_epoch["tokens"], epochs * work_per_epoch["model_flops"]
    peak = matmul_peak(device)
    rate = flops / max(seconds, 1e-9)
    return {"tokens_per_second": round(tokens / max(seconds, 1e-9), 1), "model_tflops_per_second": round(rate / 1e12, 3),
            "matmul_peak_tflops": round(peak / 1e12, 3), "mfu": round(rate / (peak * processes), 4),
            "peak_dtype": "bf16" if torch.device(device).type == "cuda" else "fp32", "epochs": round(epochs, 3)}
