"""Shared by the kill -9 / resume tests: kill a trainer process as soon as its first checkpoint exists."""

import os
import signal
import subprocess
import time
from pathlib import Path


def kill_at_first_checkpoint(process: subprocess.Popen, run_dir: Path, timeout: float = 300) -> None:
    """Waits for ``run_dir/checkpoint.safetensors``, then SIGKILLs ``process`` (asserting it was still running
    and left no ``metrics.json``)."""
    checkpoint, deadline = run_dir / "checkpoint.safetensors", time.time() + timeout
    while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be interrupted"
    os.kill(process.pid, signal.SIGKILL)
    process.communicate()
    assert not (run_dir / "metrics.json").exists()
