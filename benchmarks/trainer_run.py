"""Runs a genrec trainer in a child process for a benchmark: its metrics.json and wall time."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_trainer(trainer: str, config: str, run_dir: Path, bindings: list[str] = ()) -> tuple[dict, float]:
    """``python genrec/trainers/<trainer>_trainer.py <config> --run-dir <run_dir> --gin ...`` from the repository root.

    Returns:
        (the run's metrics.json, wall seconds of the whole child process); exits with the child's
        stderr tail when it fails.
    """
    command = [sys.executable, f"genrec/trainers/{trainer}_trainer.py", config, "--run-dir", str(run_dir)]
    command += [arg for binding in bindings for arg in ("--gin", binding)]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stderr[-3000:]}")
    return json.loads((Path(run_dir) / "metrics.json").read_text()), wall
