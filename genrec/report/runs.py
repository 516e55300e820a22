"""Run folders as the report reads them: ``metrics.json``, ``log.jsonl`` and ``config.gin``.

A run folder is any folder holding ``metrics.json`` (a finished run) or ``log.jsonl`` (one still
training or interrupted: its curves are shown, its test cells are empty). :func:`find_runs` takes run
folders or folders of runs, searched to any depth.

What each field comes from:

* ``model``: the trainer entry of the operative config (``train_sasrec.run_dir = ...`` -> ``sasrec``),
  else the run folder's first part under ``runs/``;
* ``dataset``, ``split``, ``protocol``, ``seed``, ``train_seconds``, ``peak_rss_mib``, ``peak_gpu_mib``,
  ``steps`` and the test metrics: ``metrics.json`` (:func:`genrec.training.fit` writes them);
  dataset, split and protocol fall back to the ``experiment.*`` bindings of ``config.gin``;
* the curves: ``log.jsonl`` records with ``loss`` (training loss per logged step) and with ``valid``
  (validation metrics per evaluation); the validation metric is ``fit.metric`` of ``config.gin``
  (default ``ndcg@10``).
"""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Run", "ReportError", "find_runs", "read_run", "scalar_metrics"]

_BINDING = re.compile(r"^(?P<key>[\w./]+)\s*=\s*(?P<value>.+?)\s*$")
_ENTRY = re.compile(r"^train_(?P<model>\w+)\.run_dir$")


class ReportError(ValueError):
    """A path that holds no run, or a run file that cannot be read."""


@dataclass
class Run:
    """One run folder, read."""

    path: Path
    name: str
    model: str
    info: dict[str, Any]
    test: dict[str, float]
    loss: list[tuple[int, float]] = field(default_factory=list)
    valid: list[tuple[int, float]] = field(default_factory=list)
    valid_metric: str = "ndcg@10"

    @property
    def finished(self) -> bool:
        return bool(self.test)


def find_runs(paths: list[str | Path]) -> list[Run]:
    """The runs in ``paths`` (run folders or folders of runs), in order, each once; named by their path
    relative to the folder they were found under (or by their own name when given directly)."""
    runs, seen = [], set()
    for given in map(Path, paths):
        if not given.is_dir():
            raise ReportError(f"{given}: no such folder; give run folders (holding metrics.json or log.jsonl) or "
                              "folders of runs, e.g. runs/")
        found = sorted({p.parent for name in ("metrics.json", "log.jsonl") for p in given.rglob(name)})
        if not found:
            raise ReportError(f"{given}: holds no run (no metrics.json or log.jsonl below it)")
        for folder in found:
            key = folder.resolve()
            if key in seen:
                continue
            seen.add(key)
            name = folder.name if folder == given else str(folder.relative_to(given))
            runs.append(read_run(folder, name))
    return runs


def read_run(folder: Path, name: str | None = None) -> Run:
    """Reads one run folder (see the module docstring)."""
    metrics = _read_json(folder / "metrics.json") if (folder / "metrics.json").is_file() else {}
    config = _bindings(folder / "config.gin")
    info = {
        "dataset": metrics.get("dataset", config.get("experiment.dataset", "")),
        "split": metrics.get("split", config.get("experiment.split", "")),
        "protocol": metrics.get("protocol", config.get("experiment.protocol", "")),
        "seed": metrics.get("seed", ""),
    }
    info.update({key: metrics[key] for key in ("steps", "epochs", "train_seconds", "eval_seconds", "peak_rss_mib",
                                               "peak_gpu_mib", "device") if key in metrics})
    valid_metric = str(config.get("fit.metric", "ndcg@10"))
    loss, valid = _curves(folder / "log.jsonl", valid_metric)
    return Run(path=folder, name=name or folder.name, model=_model(folder, config), info=info,
               test=scalar_metrics(metrics.get("test") or {}), loss=loss, valid=valid, valid_metric=valid_metric)


def scalar_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of a metrics dict, nested protocols as ``sampled/hit@10``; lists are left out."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(scalar_metrics(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[f"{prefix}{key}"] = float(value)
    return out


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ReportError(f"{path}: not readable as JSON ({error}); re-run the trainer on that folder to rewrite "
                          "it, or leave the folder out") from None
    if not isinstance(value, dict):
        raise ReportError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


def _bindings(path: Path) -> dict[str, Any]:
    """``key -> value`` of the simple one-line bindings of an operative ``config.gin`` (literals parsed)."""
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = _BINDING.match(line)
        if match and not line.startswith("#"):
            try:
                out[match["key"]] = ast.literal_eval(match["value"])
            except (ValueError, SyntaxError):
                out[match["key"]] = match["value"]  # a reference (@name) or a multi-line value
    return out


def _model(folder: Path, config: dict[str, Any]) -> str:
    for key in config:
        match = _ENTRY.match(key)
        if match:
            return match["model"]
    parts = folder.resolve().parts
    return parts[parts.index("runs") + 1] if "runs" in parts[:-1] else folder.name


def _curves(path: Path, metric: str) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(step, training loss) and (step, validation ``metric``) from ``log.jsonl``; a torn line is skipped."""
    loss, valid = [], []
    if not path.is_file():
        return loss, valid
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
            step = int(record["step"])
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line of a killed run
        if isinstance(record.get("loss"), (int, float)):
            loss.append((step, float(record["loss"])))
        value = scalar_metrics(record["valid"]).get(metric) if isinstance(record.get("valid"), dict) else None
        if value is not None:
            valid.append((step, value))
    return loss, valid
