"""Checks of :func:`genrec.training.fit`'s numeric settings: a binding that cannot work fails before any
work starts, with one line naming it."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["check_fit_settings"]

_BOUNDS = {  # fit setting: (kind, lowest value, lowest value excluded, None allowed)
    "max_epochs": (int, 1, False, False), "max_steps": (int, 1, False, True), "batch_size": (int, 1, False, False),
    "learning_rate": (float, 0, True, False), "weight_decay": (float, 0, False, False),
    "warmup_steps": (int, 0, False, False), "grad_clip": (float, 0, True, True),
    "grad_accum_steps": (int, 1, False, False), "eval_every_epochs": (int, 1, False, False),
    "eval_every_steps": (int, 1, False, True), "patience": (int, 1, False, True),
    "log_every_steps": (int, 1, False, False), "max_train_seconds": (float, 0, True, True), "num_workers": (int, 0, False, False),
}


def check_fit_settings(mode: str, **settings: Any) -> None:
    """Raises ValueError naming the ``fit.*`` binding whose value cannot work (see :data:`_BOUNDS`)."""
    if mode not in ("max", "min"):
        raise ValueError(f"fit.mode = {mode!r} cannot work; it must be 'max' or 'min'")
    for name, value in settings.items():
        kind, low, strict, optional = _BOUNDS[name]
        if value is None and optional:
            continue
        number = isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or value < low or (strict and value == low):
            need = f"{'an int' if kind is int else 'a finite number'} {'>' if strict else '>='} {low}"
            raise ValueError(f"fit.{name} = {value!r} cannot work; it must be {need}{', or None' if optional else ''}")
