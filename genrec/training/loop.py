"""The one training loop every genrec trainer runs.

``fit`` trains a model on a map-style dataset with AdamW, a warm-up + decay learning-rate schedule,
gradient clipping and accumulation, mixed precision where the device supports it, and evaluation on
the validation set every N epochs or steps, with early stopping. At the end it restores the best
weights, evaluates the test set exactly once and writes ``metrics.json``.

A run is a folder::

    config.gin            operative gin config (what every configurable actually received)
    log.jsonl             one JSON object per logged step and per evaluation
    checkpoint.safetensors  the last complete state (model, optimizer, scheduler, RNG, loop state)
    best.safetensors      the weights with the best validation metric

Both hold every model entry except frozen parameters (:func:`trainable_state_dict`): those keep
the values the model is built with, so an LLM trained with LoRA does not rewrite its base model.
    metrics.json          dataset, split, protocol, seed, fingerprint, valid, test, timings, memory

Resuming: running the same command on the same folder after an interruption (even ``kill -9``)
restarts from ``checkpoint.safetensors``, which is written at every validation (so a model that
trains thousands of tiny epochs, like the RQ-VAE, does not write one per epoch). Batches are drawn
from a sampler seeded by (seed, epoch), batches already done in the interrupted epoch are skipped,
and the RNG states are restored, so on a CPU the resumed run reaches exactly the metrics of an
uninterrupted one. A folder whose ``config.gin`` differs from the current config is refused rather
than silently mixed; a folder in use by another process is refused; a finished run reports its
``metrics.json`` (:mod:`genrec.training.run_folder`).

Distributed: the same code runs on one process or many (``accelerate launch``, ``torchrun``): each
process takes a disjoint shard of every epoch's permutation (``DistributedSampler``), gradients are
averaged by DDP, evaluation shards rows over processes and gathers them, and only the main process
writes files.

The model contract: ``model(**batch)`` returns ``(output, loss)`` with a scalar loss.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import gin
import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from genrec.config import check_all_bindings_used
from genrec.io import atomic_write_text
from genrec.progress import progress
from genrec.training.checkpoint import (load_checkpoint, load_trainable_file, save_checkpoint, save_tensors,
                                        trainable_state_dict)
from genrec.training.compiling import compile_for_training, compile_mode
from genrec.training.fit_settings import check_fit_settings
from genrec.training.measures import peak_memory, throughput
from genrec.training.run_folder import RunLog, check_config, finished_metrics, run_folder_lock, seal_metrics
from genrec.training.trackers import check_tracker, start_tracker, stop_tracker, tracker_settings

__all__ = ["fit", "lr_lambda", "seed_everything"]


Evaluate = Callable[[torch.nn.Module, str, Accelerator], dict[str, Any]]


def seed_everything(seed: int) -> None:
    """Seeds python, numpy and torch (all devices); ``seed`` is an int in 0..2**32-1 (numpy's range)."""
    import random

    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise ValueError(f"seed = {seed!r} cannot work; it must be an int in 0..{2**32 - 1} (bind the trainer's seed, "
                         "e.g. train_sasrec.seed = 2020)")

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_lambda(schedule: str, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Learning-rate multiplier per optimizer step: linear warm-up to 1, then the named decay.

    ``constant``: 1; ``linear``: 1 -> 0 at ``total_steps``; ``cosine``: 0.5 (1 + cos(pi t)), t the
    fraction of post-warm-up steps done.
    """
    if schedule not in ("constant", "linear", "cosine"):
        raise ValueError(f"unknown fit.schedule {schedule!r}; use 'constant', 'linear' or 'cosine'")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 1.0 - t if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * t))

    return factor


def _mixed_precision(choice: str) -> str:
    if choice not in ("auto", "no", "fp16", "bf16"):
        raise ValueError(f"fit.mixed_precision = {choice!r} cannot work; use 'auto', 'no', 'fp16' or 'bf16'")
    if choice == "auto":  # bf16 on a GPU that supports it; CPU autocast is slower than fp32 for these models
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return choice


@gin.configurable(denylist=["model", "train_data", "evaluate", "run_dir", "info", "collate_fn", "seed"])
def fit(
    model: torch.nn.Module,
    train_data: Dataset,
    evaluate: Evaluate,
    run_dir: str | Path,
    info: dict[str, Any],
    seed: int,
    collate_fn: Callable | None = None,
    max_epochs: int = 100,
    max_steps: int | None = None,
    max_train_seconds: float | None = None,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    warmup_steps: int = 0,
    schedule: str = "constant",
    grad_clip: float | None = 1.0,
    grad_accum_steps: int = 1,
    mixed_precision: str = "auto",
    eval_every_epochs: int = 1,
    eval_every_steps: int | None = None,
    patience: int | None = 10,
    metric: str = "ndcg@10",
    mode: str = "max",
    ties_improve: bool = False,
    test_curve: bool = False,
    log_every_steps: int = 10,
    num_workers: int = 0,
    compile: bool | str = False,
    fused_adamw: bool | None = None,
    log_with: str | None = None,
) -> dict[str, Any]:
    """Trains ``model``, selects the best validation checkpoint, evaluates test once.

    Args:
        model: returns ``(output, loss)`` from ``model(**batch)``.
        train_data: map-style dataset of training examples (dicts of tensors).
        evaluate: ``evaluate(model, "valid" | "test", accelerator) -> metrics dict``; called with the
            unwrapped model in eval mode on every process.
        run_dir: the run folder (created).
        info: what ``metrics.json`` records about the data: ``dataset``, ``split``, ``protocol``,
            ``fingerprint`` (and anything else).
        seed: seeds the epoch permutations (the caller seeds model initialisation).
        collate_fn: batches examples; default stacks dicts of tensors.
        max_epochs: epochs at most.
        max_steps: optimizer steps at most (stops mid-epoch); ``None``: no limit.
        max_train_seconds: stop (and validate) once training, validations excluded, took this long, checked
            every ``log_every_steps`` steps and at epoch ends, on all processes together: comparisons at equal
            wall time. The learning-rate schedule still spans ``max_epochs`` / ``max_steps``. ``None``: no limit.
        batch_size: examples per micro-batch per process.
        learning_rate: peak AdamW learning rate.
        weight_decay: AdamW decoupled weight decay.
        betas: AdamW betas.
        warmup_steps: optimizer steps of linear warm-up.
        schedule: ``constant``, ``linear`` or ``cosine`` decay after warm-up (see :func:`lr_lambda`).
        grad_clip: max global gradient norm; ``None`` disables clipping.
        grad_accum_steps: micro-batches per optimizer step.
        mixed_precision: ``no``, ``fp16``, ``bf16`` or ``auto`` (bf16 on a GPU that supports it, else no).
        eval_every_epochs: validate after every this many epochs.
        eval_every_steps: also validate every this many optimizer steps (``None``: only per epoch).
        patience: stop after this many validations without improvement (``None``: never stop early).
        metric: validation metric that selects the best weights (a key of the dict ``evaluate`` returns).
        mode: ``max`` (the default, e.g. NDCG) or ``min`` (e.g. a loss): which direction is better.
        ties_improve: a validation equal to the best counts as an improvement (takes the newer weights
            and resets patience), as RecBole's early stopping does; the default needs a strict improvement.
        test_curve: also evaluate test after every validation, for the learning curve only (``log.jsonl``
            and ``metrics.json["test_curve"]``); selection still uses validation alone.
        log_every_steps: optimizer steps between ``log.jsonl`` records.
        num_workers: DataLoader workers.
        compile: ``False``, ``True`` / ``"model"`` (``torch.compile`` of the whole model) or ``"blocks"``
            (each repeated block compiled, dynamic shapes: :mod:`genrec.training.compiling`); evaluation
            always runs eagerly. Worth it on a GPU for LLM fine-tuning, slower to start everywhere.
        fused_adamw: AdamW as one fused kernel over all parameters; ``None``: on CUDA only. On a CPU
            it is ~10x faster per step for a 135M-parameter LLM (benchmarks/llm_throughput.py) but
            rounds differently from the reference AdamW, so the small models keep the reference.
        log_with: an accelerate tracker that also gets every ``log.jsonl`` record, e.g. ``"tensorboard"``
            (``<run dir>/tensorboard/``; :mod:`genrec.training.trackers`); ``None``: ``log.jsonl`` only.

    Returns:
        The dictionary written to ``metrics.json``.
    """
    run_dir = Path(run_dir)
    check_fit_settings(max_epochs=max_epochs, max_steps=max_steps, max_train_seconds=max_train_seconds,
                       batch_size=batch_size, learning_rate=learning_rate, weight_decay=weight_decay,
                       warmup_steps=warmup_steps, grad_clip=grad_clip, grad_accum_steps=grad_accum_steps,
                       eval_every_epochs=eval_every_epochs, eval_every_steps=eval_every_steps, patience=patience,
                       mode=mode, log_every_steps=log_every_steps, num_workers=num_workers)
    check_tracker(log_with)
    compile = compile_mode(compile)
    # accelerate keeps one precision per process; each fit chooses its own (the process group stays).
    AcceleratorState._reset_state()
    accelerator = Accelerator(mixed_precision=_mixed_precision(mixed_precision), cpu=not torch.cuda.is_available(),
                              **tracker_settings(log_with, run_dir))
    main = accelerator.is_main_process
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    with run_folder_lock(run_dir, main):
        check_all_bindings_used()
        check_config(run_dir / "config.gin", gin.operative_config_str(), main)
        accelerator.wait_for_everyone()

        sampler = DistributedSampler(train_data, num_replicas=accelerator.num_processes,
                                     rank=accelerator.process_index, shuffle=True, seed=seed, drop_last=False)
        # The loader's own generator keeps iterator creation from drawing on the global RNG, whose state a
        # resumed run restores from the checkpoint.
        loader = DataLoader(train_data, batch_size=batch_size, sampler=sampler, collate_fn=collate_fn,
                            num_workers=num_workers, generator=torch.Generator().manual_seed(seed))
        if len(loader) == 0:
            raise ValueError("the training set is empty: nothing to train on (check the dataset and split)")
        steps_per_epoch = math.ceil(len(loader) / grad_accum_steps)
        total_steps = min(max_steps or sys.maxsize, steps_per_epoch * max_epochs)

        params = [p for p in model.parameters() if p.requires_grad]
        fused = accelerator.device.type == "cuda" if fused_adamw is None else fused_adamw
        optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay, betas=tuple(betas),
                                      **({"fused": True} if fused else {}))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(schedule, warmup_steps, total_steps))
        wrapped, optimizer = accelerator.prepare(model, optimizer)
        train_model = compile_for_training(wrapped, compile)  # shares the parameters of ``wrapped``

        log = RunLog(run_dir / "log.jsonl", main, start_tracker(accelerator, log_with))
        ckpt_path = run_dir / "checkpoint.safetensors"
        state = {"epoch": 0, "batch": 0, "step": 0, "best": None, "best_step": None, "bad_evals": 0,
                 "done": False, "train_seconds": 0.0, "eval_seconds": 0.0}
        if ckpt_path.exists():
            state = load_checkpoint(ckpt_path, accelerator.unwrap_model(wrapped), optimizer, scheduler)
            finished = finished_metrics(run_dir, state)
            if finished is not None:
                accelerator.print(f"{run_dir} holds a finished run; reporting its metrics.json (delete that file to "
                                  "evaluate test again, or the folder to train again)")
                load_trainable_file(accelerator.unwrap_model(wrapped), run_dir / "best.safetensors")  # the caller may save it
                if accelerator.num_processes > 1:
                    accelerator.end_training()
                stop_tracker(accelerator)
                return finished
            accelerator.print(f"resuming {run_dir} at epoch {state['epoch']}, step {state['step']}")
        log.truncate_after(state["step"])  # records of an interrupted or discarded run after its checkpoint

        def checkpoint() -> None:
            accelerator.wait_for_everyone()
            if main:
                save_checkpoint(ckpt_path, accelerator.unwrap_model(wrapped), optimizer, scheduler, state)

        def timed_evaluate(which: str) -> dict[str, Any]:
            """Evaluates ``which`` during training; its time counts as evaluation, not training."""
            t0 = time.perf_counter()
            metrics = _evaluate(evaluate, wrapped, which, accelerator)
            state["eval_seconds"] += time.perf_counter() - t0
            return metrics

        def validate() -> bool:
            """Evaluates valid, keeps the best weights; returns True when training should stop."""
            if state.get("last_eval_step") == state["step"]:
                return patience is not None and state["bad_evals"] >= patience
            state["last_eval_step"] = state["step"]
            metrics = timed_evaluate("valid")
            if metric not in metrics:
                raise KeyError(f"fit.metric {metric!r} is not among the validation metrics: {sorted(metrics)}")
            value = float(metrics[metric])
            best = state["best"]
            improved = best is None or (value > best if mode == "max" else value < best) or (ties_improve and value == best)
            if improved:
                state.update(best=value, best_step=state["step"], best_epoch=state["epoch"], bad_evals=0, best_valid=metrics)
                if main:
                    save_tensors(run_dir / "best.safetensors", trainable_state_dict(accelerator.unwrap_model(wrapped)),
                                 {"step": state["step"]})
            else:
                state["bad_evals"] += 1
            log.write(step=state["step"], epoch=state["epoch"], valid=metrics, best=state["best"])
            if test_curve:  # reported, never used for selection
                point = {"epoch": state["epoch"], "step": state["step"], "test": timed_evaluate("test")}
                state.setdefault("test_curve", []).append(point)
                log.write(step=state["step"], epoch=state["epoch"], test_curve=point["test"])
            accelerator.print(f"epoch {state['epoch']} step {state['step']}: valid {metric} {value:.4f}"
                              f"{' (best)' if improved else ''}")
            return patience is not None and state["bad_evals"] >= patience

        def validate_and_checkpoint(stop: bool) -> bool:
            """Checks the pending losses, validates, records the time and checkpoints; returns whether to stop."""
            flush_losses()
            stop = validate() or stop
            state["train_seconds"] = time.perf_counter() - t_start - state["eval_seconds"]
            state["done"] = stop
            checkpoint()
            return stop

        pending: list[tuple[int, torch.Tensor]] = []  # (step, loss) not yet read back from the device
        # losses since the last log record; part of the checkpointed state, so that a resumed run logs
        # the same averages as an uninterrupted one
        running: list[float] = state.setdefault("running_losses", [])

        def flush_losses() -> None:
            """Reads pending losses back from the device at once (one sync), failing on a non-finite one."""
            if not pending:
                return
            values = torch.stack([loss for _, loss in pending]).float().cpu().tolist()
            for (step, _), loss in zip(pending, values):
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"training loss is {loss} at step {step}. Lower fit.learning_rate (now {learning_rate}), "
                        f"keep fit.grad_clip set, or use fit.mixed_precision = 'no'; the last good checkpoint "
                        f"is {ckpt_path}.")
            running.extend(values)
            pending.clear()
            bar.set_postfix(loss=f"{values[-1]:.4f}", epoch=state["epoch"])

        def out_of_time() -> bool:  # the training-time budget is spent (the same answer on every process)
            spent = max_train_seconds is not None and time.perf_counter() - t_start - state["eval_seconds"] >= max_train_seconds
            if max_train_seconds is not None and accelerator.num_processes > 1:
                spent = bool(accelerator.reduce(torch.tensor(float(spent), device=accelerator.device), "max").item())
            state["out_of_time"] = state.get("out_of_time", False) or spent
            return spent

        t_start = time.perf_counter() - state["train_seconds"] - state["eval_seconds"]
        bar = progress(total=total_steps, initial=state["step"], disable=not main, desc=f"train {run_dir}", unit="step")
        while not state["done"]:
            sampler.set_epoch(state["epoch"])
            wrapped.train()
            micro = []
            flush_losses()
            if state["batch"] == 0:  # a log record covers the steps of one epoch (resumed mid-epoch: keep them)
                running.clear()
            for i, batch in enumerate(loader):
                if i < state["batch"]:
                    continue  # done before an interruption
                micro.append(batch)
                if len(micro) < grad_accum_steps and i + 1 < len(loader):
                    continue
                loss = _train_step(train_model, micro, optimizer, scheduler, accelerator, grad_clip)
                micro = []
                state["batch"], state["step"] = i + 1, state["step"] + 1
                pending.append((state["step"], loss))
                bar.update(1)
                if state["step"] % log_every_steps == 0:
                    flush_losses()
                    log.write(step=state["step"], epoch=state["epoch"], loss=float(np.mean(running)),
                              lr=scheduler.get_last_lr()[0])
                    running.clear()
                stop = state["step"] >= total_steps or (state["step"] % log_every_steps == 0 and out_of_time())
                if eval_every_steps and state["step"] % eval_every_steps == 0:
                    stop = validate_and_checkpoint(stop)
                if stop and i + 1 < len(loader):  # the last batch falls through to the epoch's end
                    break
            else:  # epoch finished
                state.update(epoch=state["epoch"] + 1, batch=0)
                stop = state["epoch"] >= max_epochs or state["step"] >= total_steps or out_of_time()
                if state["epoch"] % eval_every_epochs == 0 or stop:  # checkpoints come with validations
                    stop = validate_and_checkpoint(stop)
                continue
            if not state["done"]:  # stopped mid-epoch by max_steps or patience without a step-eval
                validate_and_checkpoint(True)
        bar.close()
        optimizer.zero_grad(set_to_none=True)
        getattr(optimizer, "optimizer", optimizer).state.clear()  # AdamW's state (2x the weights) is done with

        load_trainable_file(accelerator.unwrap_model(wrapped), run_dir / "best.safetensors")
        t0 = time.perf_counter()
        test = _evaluate(evaluate, wrapped, "test", accelerator)
        test_seconds = time.perf_counter() - t0
        result = {
            **{k: info[k] for k in ("dataset", "split", "protocol") if k in info},
            "seed": seed,
            "valid": state["best_valid"],
            "selection": {"metric": metric, "mode": mode, "patience": patience, "ties_improve": ties_improve,
                          "eval_every_epochs": eval_every_epochs, "eval_every_steps": eval_every_steps},
            "test": test,
            "best_epoch": state.get("best_epoch"),
            "best_step": state["best_step"],
            "epochs": state["epoch"],
            "steps": state["step"],
            "steps_per_epoch": steps_per_epoch,
            **({"test_curve": state.get("test_curve", [])} if test_curve else {}),
            "train_seconds": round(state["train_seconds"], 2),
            **({"max_train_seconds": max_train_seconds, "stopped_by_time": state.get("out_of_time", False)}
               if max_train_seconds else {}),
            "eval_seconds": round(state["eval_seconds"], 2),
            "test_seconds": round(test_seconds, 2),
            **peak_memory(),
            **({"throughput": throughput(info["work_per_epoch"], state["step"] / steps_per_epoch, state["train_seconds"],
                                         accelerator.device, accelerator.num_processes)} if "work_per_epoch" in info else {}),
            **{k: v for k, v in info.items() if k not in ("dataset", "split", "protocol")},
            "num_processes": accelerator.num_processes,
            "device": str(accelerator.device),
            "mixed_precision": accelerator.mixed_precision,
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
        }
        if main:
            log.write(step=state["step"], epoch=state["epoch"], test=test)
            result = seal_metrics(result)  # + its own sha256: a corrupted metrics.json is never reported
            atomic_write_text(run_dir / "metrics.json", json.dumps(result, indent=2) + "\n")
        accelerator.wait_for_everyone()
        stop_tracker(accelerator)
        if accelerator.num_processes > 1:
            accelerator.end_training()  # tears down the process group; exiting without it can abort at exit
        return result


def _train_step(model, micro: list[dict], optimizer, scheduler, accelerator: Accelerator,
                grad_clip: float | None) -> torch.Tensor:
    """One optimizer step over the micro-batches in ``micro``; returns their mean loss as a 0-d tensor
    on the device (reading it back is left to the caller, so a GPU step never waits for the host)."""
    total = 0.0
    for j, batch in enumerate(micro):
        batch = {k: v.to(accelerator.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        sync = j == len(micro) - 1
        with (nullcontext() if sync else accelerator.no_sync(model)), accelerator.autocast():
            _, loss = model(**batch)
            accelerator.backward(loss / len(micro))
        total = total + loss.detach().float()
    if grad_clip is not None:
        accelerator.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return total / len(micro)


def _evaluate(evaluate: Evaluate, wrapped, which: str, accelerator: Accelerator) -> dict[str, Any]:
    """Evaluates the unwrapped model in eval mode and outside autocast, so scores are float32 on every
    device (bf16 scores tie many items with the target, and ties rank it pessimistically)."""
    model = accelerator.unwrap_model(wrapped)
    model.eval()
    try:  # eagerly, also when fit.compile = "blocks" compiled the model's blocks in place
        with torch.inference_mode(), torch.compiler.set_stance("force_eager"):
            return evaluate(model, which, accelerator)
    finally:
        model.train()
