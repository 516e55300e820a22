"""``torch.compile`` for training: the whole model, or each of its repeated blocks (regional compilation).

``fit.compile`` takes:

* ``False`` / ``"no"``: eager (the default);
* ``True`` / ``"model"``: ``torch.compile`` of the whole model. Every new batch shape can cost a new
  compilation, and a model with many layers takes long to compile;
* ``"blocks"``: each block of the model's largest list of identical blocks (the decoder layers of
  a transformers LLM, the transformer blocks of SASRec or TIGER) compiled in place, with dynamic
  shapes. All blocks share one compiled graph, so compiling takes the time of one block, and batches
  of varying shape (LC-Rec's packed rows) reuse it. What lies between the blocks (embeddings, the
  attention mask, the loss) stays eager. Measured on LC-Rec's packed batches (SmolLM2-135M, CPU):
  the same loss to 2e-6, ~15 s to compile.

Evaluation runs every model eagerly (``torch.compiler.set_stance("force_eager")`` in the training
loop), so beam search and scoring never trigger compilations of their own.
"""

from __future__ import annotations

import torch

__all__ = ["COMPILE_MODES", "compile_for_training", "compile_mode", "repeated_blocks"]

COMPILE_MODES = ("no", "model", "blocks")


def compile_mode(value) -> str:
    """``fit.compile`` as one of :data:`COMPILE_MODES` (``False`` is ``"no"``, ``True`` is ``"model"``)."""
    mode = {False: "no", True: "model"}.get(value, value) if isinstance(value, bool) else value
    if mode not in COMPILE_MODES:
        raise ValueError(f"fit.compile = {value!r} cannot work; use False, True, 'model' or 'blocks'")
    return mode


def repeated_blocks(model: torch.nn.Module) -> torch.nn.ModuleList | None:
    """The model's ``ModuleList`` with the most parameters among those of two or more modules of one class."""
    best, best_size = None, 0
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) >= 2 and len({type(m) for m in module}) == 1:
            size = sum(p.numel() for p in module.parameters())
            if size > best_size:
                best, best_size = module, size
    return best


def compile_for_training(model: torch.nn.Module, mode) -> torch.nn.Module:
    """The module to train through for ``fit.compile = mode`` (module docstring); parameters stay shared."""
    mode = compile_mode(mode)
    if mode == "no":
        return model
    if mode == "model":
        return torch.compile(model)
    blocks = repeated_blocks(model)
    if blocks is None:
        raise ValueError(f"fit.compile = 'blocks' found no list of repeated blocks in {type(model).__name__}; "
                         "use fit.compile = 'model' for this model")
    for block in blocks:
        block.compile(dynamic=True)
    return model
