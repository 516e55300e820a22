"""Running a block as a single process inside a multi-process launch (``torchrun``, ``accelerate launch``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from accelerate.state import AcceleratorState

__all__ = ["DISTRIBUTED_ENV", "single_process"]

DISTRIBUTED_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                   "GROUP_RANK", "ROLE_RANK", "ROLE_WORLD_SIZE", "TORCHELASTIC_RUN_ID")
"""Environment variables through which torchrun / accelerate launch tell a process it is one of many."""


@contextmanager
def single_process() -> Iterator[None]:
    """Runs the block as a single-process job even inside a multi-process launch.

    The launcher's environment (:data:`DISTRIBUTED_ENV`, ``ACCELERATE_*``) is hidden and accelerate's
    process state reset on entry and on exit, so a :func:`genrec.training.fit` inside the block (e.g. building
    semantic IDs once, under a lock, before a model's distributed training) trains alone, and the
    next :func:`fit` after it sees the launch again. No process group may be open on entry.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        raise RuntimeError("single_process() needs no open process group; run it before the first fit")
    saved = {k: v for k, v in os.environ.items() if k in DISTRIBUTED_ENV or k.startswith("ACCELERATE_")}
    for key in saved:
        del os.environ[key]
    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        yield
    finally:
        os.environ.update(saved)
        AcceleratorState._reset_state(reset_partial_state=True)
