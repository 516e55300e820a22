"""A run folder's bookkeeping: its lock, its identity, its log and whether it is finished.

* :func:`run_folder_lock`: the main process holds ``<run dir>/.lock`` for the whole run, so two
  processes never write one folder (a second one is refused at once).
* :func:`check_config`: ``config.gin`` holds the operative config; a folder holding a resumable run
  made with another config is refused. A run's identity (:func:`config_identity`) is its config
  without ``*.run_dir`` bindings, so a folder reached through another path, or moved, still resumes.
* :class:`RunLog`: ``log.jsonl``, one JSON record per line, trimmed to the checkpoint's step on
  resume; a torn line (a kill mid-write) is dropped, never an error, and so is a test record (test
  is evaluated again whenever a run goes on, and its record written once).
* :func:`finished_metrics`: a finished run's ``metrics.json``, reported instead of evaluated again
  when it matches its own ``sha256`` (:func:`seal_metrics`: the fingerprint of every other key) and
  agrees with the checkpoint (valid metrics, steps) and with the test record of ``log.jsonl``; an
  edited or corrupt one is said so and test is evaluated again.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from genrec.io import LockedError, atomic_write_text, file_lock, fingerprint

__all__ = ["RunFolderBusy", "RunLog", "check_config", "config_identity", "finished_metrics", "run_folder_lock",
           "seal_metrics"]


class RunFolderBusy(RuntimeError):
    """Another process holds the run folder's lock."""


class RunLog:
    """Appends JSON lines to ``log.jsonl`` (main process only), and hands each record to ``tracker``
    when there is one (:func:`genrec.training.trackers.start_tracker`)."""

    def __init__(self, path: Path, enabled: bool, tracker: Callable[[dict[str, Any]], None] | None = None):
        self.path, self.enabled, self.tracker = path, enabled, tracker

    def truncate_after(self, step: int) -> None:
        """Drops records written after ``step`` (by an interrupted run that did not checkpoint them)."""
        if not (self.enabled and self.path.exists()):
            return
        keep = [line for line in self.path.read_text().splitlines() if _record_step(line) <= step]
        atomic_write_text(self.path, "".join(line + "\n" for line in keep))

    def write(self, **record: Any) -> None:
        if self.enabled:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            if self.tracker is not None:
                self.tracker(record)


def _record_step(line: str) -> int:
    """The step of a ``log.jsonl`` line; a torn or foreign line (a kill mid-write) and a test record count
    as after every step."""
    try:
        record = json.loads(line)
        return sys.maxsize if "test" in record else int(record["step"])
    except (ValueError, KeyError, TypeError):
        return sys.maxsize  # dropped: it was written after the checkpoint or never completed


def config_identity(config: str) -> str:
    """A run's config without the lines that bind run folders: the same run, reached through another
    path or after the folder moved, is the same run."""
    return "\n".join(line for line in config.splitlines() if not _RUN_DIR_BINDING.match(line))


_RUN_DIR_BINDING = re.compile(r"^\s*[\w./]+\.run_dir\s*=")


def check_config(path: Path, operative: str, main: bool) -> None:
    """Writes the operative config, or refuses a run folder made with a different one."""
    if path.exists() and (path.parent / "checkpoint.safetensors").exists():
        if config_identity(path.read_text()) != config_identity(operative):
            raise ValueError(
                f"{path.parent} holds a run made with a different config (see {path}). "
                f"Use another --run-dir, or delete {path.parent} to start over.")
        return
    if main:
        atomic_write_text(path, operative)


@contextmanager
def run_folder_lock(run_dir: Path, main: bool) -> Iterator[None]:
    """Holds ``run_dir/.lock`` (main process) so that two runs never write one folder at once."""
    if not main:
        yield
        return
    try:
        with file_lock(run_dir / ".lock", blocking=False):
            yield
    except LockedError:
        raise RunFolderBusy(f"another process is running in {run_dir} (it holds {run_dir / '.lock'}); wait for it to "
                           "finish, or give this run another --run-dir") from None


def finished_metrics(run_dir: Path, state: dict[str, Any]) -> dict[str, Any] | None:
    """The metrics.json of a finished run (its checkpoint says done), or None to train/evaluate."""
    path = run_dir / "metrics.json"
    if not state.get("done") or not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        metrics = None  # torn or unreadable: evaluate test again and rewrite it
    tests = [record["test"] for record in _records(run_dir / "log.jsonl") if "test" in record]
    if (isinstance(metrics, dict) and tests and metrics.get("test") == tests[-1]
            and metrics.get("sha256", "") in ("", seal_metrics(metrics)["sha256"])  # files before seals had none
            and metrics.get("valid") == state.get("best_valid") and metrics.get("steps") == state.get("step")):
        return metrics
    print(f"genrec: {path} is unreadable or disagrees with the checkpoint and log.jsonl (edited or corrupt); "
          "evaluating test again", file=sys.stderr)
    return None


def seal_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` with ``sha256``: the fingerprint of every other key (as JSON), checked when reported again."""
    body = {key: value for key, value in metrics.items() if key != "sha256"}
    return {**body, "sha256": fingerprint(json.loads(json.dumps(body)))}


def _records(path: Path) -> list[dict[str, Any]]:
    """The complete JSON object lines of ``path`` (none when it is missing)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
