"""LC-Rec fine-tuning speed, old path next to the fast path, full and LoRA; prints one JSON line.

    python benchmarks/llm_throughput.py                                         # debug config, 3 steps per path
    python benchmarks/llm_throughput.py --config config/lcrec/ml100k/lcrec.gin --steps 20   # the recipe's batches (GPU)

Both paths train the same model (the config's LC-Rec over the bundled SmolLM2-135M and its
semantic IDs, built first if missing) on the same examples, drawn in the same order, with one AdamW
state; their steps alternate (old, new, new, old, ...) so that both see the same machine load. By
default (``--adamw as-run``) each path steps AdamW as it runs: the old path as ``fit`` did on this
device before the fast path (foreach on a CPU), the new ones with the config's ``fit.fused_adamw``
(the LC-Rec configs set it), so the speed-up is today's against before; ``--adamw foreach|fused``
gives every path the same implementation, which isolates the batches and the loss.

* ``old``: what LC-Rec did before the fast path: each batch rendered and tokenised when fetched,
  right-padded, and ``llm(..., labels=labels).loss`` (logits over the whole [B, L, V]).
* ``new``: the fast path: examples tokenised once (:class:`genrec.llm.tasks.TaskData`), packed
  padding-free into rows of ``TaskData.pack_tokens``, and :func:`genrec.llm.finetune.causal_lm_loss`
  (the output head on the labelled positions only).
* ``new_gc`` (``--gradient-checkpointing``): the fast path with activation checkpointing.
* ``new_compiled`` (``--compile``): the fast path with the decoder layers compiled
  (``fit.compile = "blocks"``, :mod:`genrec.training.compiling`); the other paths then run under
  ``torch.compiler.set_stance("force_eager")``; with ``--gradient-checkpointing`` too,
  ``new_compiled_gc`` (full) adds activation checkpointing to it.

``--users N`` builds the examples from the first N training users only (a quick run; the batches
keep the recipe's size and mix).

Each mode (full, LoRA) runs in a process of its own. Reported per path: real (non-padding) tokens
per second of wall time and of process CPU time (the latter is steadier on a shared machine),
seconds per step (and of it, the AdamW step), the share of batch slots that are real tokens, peak memory of a step (CPU: the
peak resident set, reset before each step with ``malloc_trim`` + ``/proc/self/clear_refs``, so it
holds the model, gradients and AdamW state plus that step's transient memory; GPU: peak allocated;
``process_peak_rss_mib`` is the whole process, model loading included), and
MFU: the model FLOPs that the step needs over the device's dense matmul peak, measured here
(:mod:`genrec.llm.flops`: fp32 on CPU, bf16 on GPU; the same count for every path, so the old
path's MFU is lower by exactly its waste: the head on every position, padding). The first step
of each path is a warm-up (with ``--compile``, it compiles).
Also recorded: ``os.getloadavg()`` at start and end, torch threads, the process's overall peak.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import resource
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import gin  # noqa: E402

import genrec.trainers.lcrec_trainer  # noqa: E402,F401  (registers every configurable of the config)
from genrec.config import parse_gin  # noqa: E402
from genrec.llm.flops import fine_tuning_flops  # noqa: E402
from genrec.llm.lora import lora_settings  # noqa: E402
from genrec.llm.tasks import TaskData  # noqa: E402
from genrec.models.lcrec import LCRec  # noqa: E402
from genrec.progress import quiet_library_bars  # noqa: E402
from genrec.semantic_ids import ensure_semantic_ids  # noqa: E402
from genrec.training import experiment  # noqa: E402
from genrec.training.compiling import compile_for_training  # noqa: E402
from genrec.training.measures import matmul_peak  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")


def _sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def _reset_peak() -> None:
    if CUDA:
        torch.cuda.reset_peak_memory_stats()
        return
    try:  # hand freed heap back to the system first, so that the resident set is live memory
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM, the peak resident set (Linux >= 4.0)
    except OSError:
        pass


def _peak_mib() -> float:
    if CUDA:
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _bound(name: str, default):
    try:
        return gin.query_parameter(name)
    except ValueError:
        return default


def _checkpointing(llm, on: bool) -> None:
    """Activation checkpointing on or off (transformers 5 renamed gradient_checkpointing_*)."""
    name = "activation_checkpointing" if hasattr(llm, "activation_checkpointing_enable") else "gradient_checkpointing"
    if on:
        getattr(llm, f"{name}_enable")(**{f"{name}_kwargs": {"use_reentrant": False}})
    else:
        getattr(llm, f"{name}_disable")()


def path_adamw(choice: str, path: str) -> str:
    """The AdamW implementation a path steps with: ``as-run`` gives the old path what ``fit`` used on this
    device before the fast path (fused on CUDA, foreach on a CPU) and the new paths what the config runs
    (fused with ``fit.fused_adamw = True``, as the LC-Rec configs set; else fit's device default)."""
    if choice != "as-run":
        return choice if choice != "auto" else ("fused" if CUDA else "foreach")
    if path == "old":
        return "fused" if CUDA else "foreach"
    configured = _bound("fit.fused_adamw", None)
    return "fused" if configured or (configured is None and CUDA) else "foreach"


def old_batch(model: LCRec, data: TaskData, rows: list[int]) -> dict:
    """Today's batch before the fast path: rendered, tokenised and padded when fetched."""
    instructions, responses = zip(*(data.example(i) for i in rows))
    return model.format.encode(instructions, responses)


def run_mode(mode: str, args, exp, ids, batch_size: int, code_init: str, seed: int) -> dict:
    """Trains ``--steps`` + 1 steps per path on one model; per-path throughput, MFU and memory."""
    torch.manual_seed(seed)
    _reset_peak()
    model = LCRec()
    model.attach(ids, init=code_init, item_texts=exp.catalog.texts())
    if mode == "lora":
        model.enable_lora(lora_settings())
    model.to(DEVICE).train()
    data = TaskData(exp.split.train[:args.users], model.item_code_strings, exp.catalog, model.format, seed=seed)
    order = np.random.default_rng(seed).permutation(len(data))
    lengths_all = data.lengths()
    load_peak = _peak_mib()  # building the model and the data
    paths = ["old", "new"] + (["new_gc"] if args.gradient_checkpointing and mode == "full" else [])
    paths += ["new_compiled"] if args.compile else []
    paths += ["new_compiled_gc"] if args.compile and args.gradient_checkpointing and mode == "full" else []
    if args.compile:
        compile_for_training(model.llm, "blocks")
    adamw = {path: path_adamw(args.adamw, path) for path in paths}
    # one AdamW state for every path; each step runs the path's implementation (they share the state's layout)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    stats = {path: {"tokens": 0, "flops": 0.0, "wall": 0.0, "cpu": 0.0, "optimizer": 0.0, "peak_mib": 0.0,
                    "batch_tokens": 0}
             for path in paths}
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if CUDA else nullcontext()
    for step in range(args.steps + 1):
        rows = order[step * batch_size:(step + 1) * batch_size].tolist()
        lengths = lengths_all[rows]
        labelled = int(data.label_counts()[rows].sum())
        for path in (paths if step % 2 == 0 else paths[::-1]):
            if path.endswith("_gc"):
                _checkpointing(model.llm, True)
            gc.collect()
            _sync()
            _reset_peak()
            wall, cpu = time.perf_counter(), time.process_time()
            batch = old_batch(model, data, rows) if path == "old" else data.__getitems__(rows)
            batch = {k: v.to(DEVICE) for k, v in batch.items()}
            for group in optimizer.param_groups:
                group["fused"], group["foreach"] = (True, False) if adamw[path] == "fused" else (None, adamw[path] == "foreach")
            eager = torch.compiler.set_stance("force_eager") if args.compile and "compiled" not in path else nullcontext()
            with autocast, eager:
                loss = (model.llm(**batch, use_cache=False).loss if path == "old" else model(**batch)[1])
            loss.backward()
            _sync()
            optimizer_start = time.perf_counter()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            _sync()
            optimizer_wall = time.perf_counter() - optimizer_start
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if path.endswith("_gc"):
                _checkpointing(model.llm, False)
            if not np.isfinite(loss.item()):
                raise FloatingPointError(f"{mode}/{path}: loss {loss.item()} at step {step}")
            if step == 0:
                continue  # warm-up
            s = stats[path]
            s["tokens"] += int(lengths.sum())
            s["batch_tokens"] += int(batch["input_ids"].numel())
            s["flops"] += fine_tuning_flops(model.llm, lengths, labelled)
            s["wall"] += wall
            s["optimizer"] += optimizer_wall
            s["cpu"] += cpu
            s["peak_mib"] = max(s["peak_mib"], _peak_mib())
    out = {}
    for path, s in stats.items():
        out[path] = {"tokens_per_second": round(s["tokens"] / s["wall"], 1),
                     "cpu_tokens_per_second": round(s["tokens"] / s["cpu"], 1) if not CUDA else None,
                     "seconds_per_step": round(s["wall"] / args.steps, 2),
                     "optimizer_seconds_per_step": round(s["optimizer"] / args.steps, 2),
                     "real_token_share": round(s["tokens"] / s["batch_tokens"], 3),
                     "model_flops_per_second": s["flops"] / s["wall"],
                     "peak_step_mib": round(s["peak_mib"], 1)}
    for path in paths[1:]:
        out[path]["adamw"] = adamw[path]
        out[f"{path}_speedup"] = round(out[path]["tokens_per_second"] / out["old"]["tokens_per_second"], 2)
        if not CUDA:
            out[f"{path}_cpu_speedup"] = round(out[path]["cpu_tokens_per_second"]
                                               / out["old"]["cpu_tokens_per_second"], 2)
    out["trainable_parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    out["examples"] = len(data)
    out["old"]["adamw"] = adamw["old"]
    out["load_peak_mib"] = round(load_peak, 1)
    out["process_peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    del model, optimizer, data
    gc.collect()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/lcrec/ml100k/lcrec_debug.gin")
    parser.add_argument("--gin", action="append", default=[], help="extra gin binding, e.g. 'fit.batch_size = 16'")
    parser.add_argument("--steps", type=int, default=3, help="measured steps per path (after one warm-up)")
    parser.add_argument("--modes", default="full,lora", help="comma-separated: full, lora")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="also time new_gc (full)")
    parser.add_argument("--compile", action="store_true", help="also time new_compiled (decoder layers compiled)")
    parser.add_argument("--users", type=int, default=None, help="examples from the first N training users only")
    parser.add_argument("--peak-size", type=int, default=8192 if CUDA else 2048, help="matmul size of the peak")
    parser.add_argument("--adamw", default="as-run", choices=["as-run", "auto", "foreach", "fused", "single"],
                        help="AdamW: as-run (default): each path as it runs, the old one as fit did before the fast "
                             "path, the new ones with the config's fit.fused_adamw; or one for every path: fused "
                             "kernel, foreach (multi-tensor), single (one tensor at a time, least temporary memory), "
                             "auto (fused on GPU, foreach on CPU, fit's device default)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    quiet_library_bars()  # no weight-loading bars in a redirected log

    os.chdir(REPO)
    parse_gin([args.config], args.gin)
    seed = _bound("train_lcrec.seed", 2020)
    batch_size = _bound("fit.batch_size", 256)
    code_init = _bound("train_lcrec.code_init", "mean")
    exp = experiment()
    ids = ensure_semantic_ids(_bound("train_lcrec.semantic_ids", "runs/rqvae/ml100k/semantic_ids.json"),
                              _bound("train_lcrec.rqvae_config", "config/rqvae/ml100k.gin"), exp.interactions)
    if args.child:
        print(json.dumps(run_mode(args.child, args, exp, ids, batch_size, code_init, seed)))
        return
    load_start = os.getloadavg()
    peak = matmul_peak(DEVICE, args.peak_size)
    out = {"benchmark": "llm_throughput", "config": args.config, "bindings": args.gin, "steps": args.steps,
           "batch_size": batch_size, "device": torch.cuda.get_device_name() if CUDA else "cpu",
           "dtype": "bf16 autocast" if CUDA else "fp32", "threads": torch.get_num_threads(),
           "cpu_count": os.cpu_count(), "torch": torch.__version__, "loadavg_start": [round(v, 2) for v in load_start]}
    for mode in args.modes.split(","):
        # each mode in a process of its own, so that its memory figures are its own
        child = subprocess.run([sys.executable, __file__, "--child", mode, *sys.argv[1:]], stdout=subprocess.PIPE,
                               text=True, check=True)
        out[mode] = json.loads(child.stdout.strip().splitlines()[-1])
    peak_end = matmul_peak(DEVICE, args.peak_size)
    out["peak_flops"] = float(np.median([peak, peak_end]))
    out["peak_flops_start_end"] = [round(peak / 1e9, 1), round(peak_end / 1e9, 1)]
    for mode in args.modes.split(","):
        for path, row in out[mode].items():
            if isinstance(row, dict):
                row["mfu"] = round(row["model_flops_per_second"] / out["peak_flops"], 4)
                row["model_flops_per_second"] = round(row["model_flops_per_second"] / 1e9, 2)  # GFLOP/s
    out["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
