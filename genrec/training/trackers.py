"""Optional experiment trackers (TensorBoard, W&B, ...) through accelerate, fed from ``log.jsonl``.

``fit.log_with = "tensorboard"`` sends every ``log.jsonl`` record (training loss and learning rate,
validation and test metrics) to accelerate's tracker of that name as well, at the record's step:
``loss``, ``lr``, ``valid/ndcg@10``, ``test/recall@10`` ... (nested metrics as ``valid/sampled/hit@10``).
TensorBoard's event files go to ``<run dir>/tensorboard/``; view them with
``tensorboard --logdir runs``. ``log.jsonl`` stays the record that resuming and ``genrec.report``
read; a tracker is a view of it. Any tracker accelerate knows works by name when its package is
installed (``wandb`` reads its own login and project settings from the environment).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from accelerate import Accelerator
from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

__all__ = ["TRACKER_PROJECT", "check_tracker", "numeric_values", "start_tracker", "stop_tracker",
           "tracker_settings"]

TRACKER_PROJECT = "tensorboard"
"""The project name given to accelerate: TensorBoard writes ``<run dir>/tensorboard/``."""


def check_tracker(log_with: str | None) -> None:
    """Raises ValueError naming the fix when ``fit.log_with`` is unknown or its package is missing."""
    if log_with is None:
        return
    if log_with not in LOGGER_TYPE_TO_CLASS:
        raise ValueError(f"fit.log_with = {log_with!r} is not a tracker accelerate knows; use None or one of: "
                         f"{', '.join(sorted(LOGGER_TYPE_TO_CLASS))}")
    if log_with not in {str(tracker) for tracker in get_available_trackers()}:
        extra = " (or pip install -e '.[tensorboard]')" if log_with == "tensorboard" else ""
        raise ValueError(f"fit.log_with = {log_with!r} needs the {log_with} package, which is not installed: "
                         f"pip install {log_with}{extra}, or set fit.log_with = None")


def numeric_values(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of a ``log.jsonl`` record, nested keys joined by ``/``; ``step`` and
    ``epoch`` are the axes, not values, and lists (per-level codebook usage) are left out.

    >>> numeric_values({"step": 3, "loss": 0.5, "valid": {"ndcg@10": 0.1, "sampled": {"hit@10": 0.4}}})
    {'loss': 0.5, 'valid/ndcg@10': 0.1, 'valid/sampled/hit@10': 0.4}
    """
    values = {}
    for key, value in record.items():
        if not prefix and key in ("step", "epoch"):
            continue
        if isinstance(value, dict):
            values.update(numeric_values(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            values[f"{prefix}{key}"] = float(value)
    return values


def start_tracker(accelerator: Accelerator, log_with: str | None) -> Callable[[dict[str, Any]], None] | None:
    """Starts the tracker on ``accelerator`` (made with ``log_with`` and ``project_dir``); returns the
    function that logs one ``log.jsonl`` record to it, or None without a tracker."""
    if log_with is None:
        return None
    accelerator.init_trackers(TRACKER_PROJECT)

    def log(record: dict[str, Any]) -> None:
        values = numeric_values(record)
        if values:
            accelerator.log(values, step=int(record["step"]))

    return log


def stop_tracker(accelerator: Accelerator) -> None:
    """Flushes and closes the trackers (without tearing down a process group)."""
    for tracker in accelerator.trackers:
        tracker.finish()


def tracker_settings(log_with: str | None, run_dir: Path) -> dict[str, Any]:
    """The ``Accelerator`` keyword arguments for ``log_with`` (nothing without a tracker)."""
    return {} if log_with is None else {"log_with": log_with, "project_dir": str(run_dir)}
