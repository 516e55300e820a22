"""The run-folder family of ``benchmarks/faults.py``: the shared loop on a tiny synthetic task.

Runs stopped at a random validation (an exception after a checkpoint), their files damaged, then resumed,
moved, re-run when finished, run with another config, or started while the folder is locked. Outcomes as
in ``benchmarks/fault_cases.py``; :func:`run_outcome` also judges the trainer runs of ``faults.py``.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import gin
import torch
from torch.utils.data import TensorDataset

from fault_cases import USER_ERRORS, Tally, damage
from genrec.io import file_lock
from genrec.training import fit


# --- run folders (the shared loop on a tiny synthetic task) ---------------------------------------------

class _Regressor(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 1)

    def forward(self, x, y):
        pred = self.lin(x).squeeze(-1)
        return pred, ((pred - y) ** 2).mean()


class _Pairs(TensorDataset):
    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        return {"x": x, "y": y}


def _evaluate(model, which, accelerator):
    x = torch.linspace(-1, 1, 30).reshape(10, 3)
    return {"neg_mse": -((model.lin(x).squeeze(-1) - x @ torch.tensor([1.0, -2.0, 0.5])) ** 2).mean().item()}


def synthetic_fit(run_dir: Path, stop_at: int | None = None, **settings):
    """The tiny loop run; ``stop_at``: raise at that validation (a crash after a checkpoint)."""
    calls = []

    def evaluate(model, which, accelerator):
        calls.append(which)
        if stop_at is not None and len(calls) == stop_at:
            raise KeyboardInterrupt("stopped")
        return _evaluate(model, which, accelerator)

    gin.clear_config()
    torch.manual_seed(0)
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    data = _Pairs(x, x @ torch.tensor([1.0, -2.0, 0.5]))
    settings = {"batch_size": 8, "learning_rate": 0.05, "max_epochs": 4, "eval_every_steps": 4, **settings}
    gin.parse_config([f"fit.{key} = {value!r}" for key, value in settings.items()])  # as trainers do: gin, not kwargs
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            return fit(_Regressor(), data, evaluate, run_dir=run_dir, info={"dataset": "synthetic"}, seed=1,
                       metric="neg_mse")
        except KeyboardInterrupt:
            return None
        finally:
            gin.clear_config()


def run_family(tally: Tally, rng, work: Path, rounds: int) -> None:
    """Runs stopped at a random validation, their files damaged, then resumed; or finished runs re-run."""
    synthetic_fit(work / "reference")
    ref_log, ref_metrics = (work / "reference" / "log.jsonl").read_text(), (work / "reference" / "metrics.json").read_text()
    for n in range(rounds):
        run = work / f"run{n}"
        fault = rng.choice(["resume", "torn_log", "moved", "checkpoint_flip", "checkpoint_truncate", "rerun_finished",
                            "metrics_corrupt", "other_config", "busy", "best_corrupt"])
        synthetic_fit(run, stop_at=None if fault in ("rerun_finished", "metrics_corrupt", "best_corrupt")
                      else rng.randrange(2, 8))
        if fault == "torn_log":
            with open(run / "log.jsonl", "a") as log:
                log.write('{"step": 99, "lo')
        elif fault == "moved":
            run = run.rename(work / f"moved{n}")
        elif fault.startswith("checkpoint_"):
            damage(run / "checkpoint.safetensors", rng, fault.split("_")[1])
        elif fault == "metrics_corrupt":
            damage(run / "metrics.json", rng, rng.choice(["truncate", "flip"]))
        elif fault == "best_corrupt":
            damage(run / "best.safetensors", rng, rng.choice(["truncate", "flip"]))
        if fault == "other_config":
            tally.refused("runs", fault, lambda: _raising_fit(run, learning_rate=0.01), ["config.gin"])
            continue
        if fault == "busy":
            with file_lock(run / ".lock"):
                tally.refused("runs", fault, lambda: _raising_fit(run), [str(run)])
            continue
        try:
            result = _raising_fit(run)
        except USER_ERRORS as error:
            named = any(name in str(error) for name in ("checkpoint.safetensors", "metrics.json", "best.safetensors"))
            tally.add("runs", fault, "clear" if named else "unclear", f"{type(error).__name__}: {error}")
            continue
        except Exception as error:  # noqa: BLE001
            tally.add("runs", fault, "traceback", f"{type(error).__name__}: {error}")
            continue
        tally.add("runs", fault, *run_outcome(run, result, ref_log, ref_metrics))


VOLATILE = {"train_seconds", "eval_seconds", "test_seconds", "peak_rss_mib", "load_average", "torch_threads", "sha256"}
"""metrics.json keys that differ between identical runs (timings, memory, machine load)."""


def stable(metrics: dict) -> dict:
    return {key: value for key, value in metrics.items() if key not in VOLATILE}


def run_outcome(run: Path, result, ref_log: str, ref_metrics: str) -> tuple[str, str]:
    """``lost`` when log.jsonl or metrics.json differ from the undamaged run's, ``silent`` when only the
    returned metrics do, else ``clear``."""
    try:
        log, metrics = (run / "log.jsonl").read_text(), json.loads((run / "metrics.json").read_text())
    except (OSError, ValueError) as error:
        return "lost", f"unreadable run files: {error}"
    reference = stable(json.loads(ref_metrics))
    if log != ref_log or stable(metrics) != reference:
        return "lost", f"log {len(log.splitlines())} vs {len(ref_log.splitlines())} lines, metrics equal: " \
                       f"{stable(metrics) == reference}"
    if not isinstance(result, dict) or stable(result) != reference:
        return "silent", "returned metrics differ"
    return "clear", ""


def _raising_fit(run: Path, **settings):
    gin.clear_config()
    torch.manual_seed(0)
    return synthetic_fit(run, **settings)
