"""File plumbing shared by every genrec module: atomic writes, file locks, content hashes.

* **Atomic writes.** :func:`atomic_write_text` / :func:`atomic_write_bytes` write to a temporary
  file in the target's folder (``.<name>.tmp<pid>``) and ``os.replace`` it over the target, so a
  kill at any moment leaves either the old file or the new one, never a torn file.
  :func:`atomic_path` gives the same guarantee to writers that need a path (e.g. ``np.save``,
  ``safetensors.save_file``).
* **File locks.** :func:`file_lock` holds an exclusive ``fcntl.flock`` on a lock file for the
  duration of a ``with`` block, so one process among many builds a shared artifact (a fetched
  dataset, a converted model, a cache) while the others wait; with ``blocking=False`` a held lock
  raises :class:`LockedError` at once instead.
* **Content hashes.** :func:`sha256_file` hashes a file in 1 MiB chunks; :func:`update_file` feeds
  a file into a running digest; :func:`fingerprint` is the sha256 of an object's canonical JSON
  (``sort_keys``), the one way genrec turns settings into a cache key.

Nothing here knows about datasets, models or training; modules above import it, it imports none
of them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["LockedError", "atomic_path", "atomic_write_bytes", "atomic_write_text", "file_lock", "fingerprint",
           "sha256_file", "update_file"]

CHUNK = 1 << 20
"""Bytes read at a time when hashing or copying files."""


class LockedError(RuntimeError):
    """A non-blocking :func:`file_lock` found the lock held by another process."""


def temporary_path(path: str | Path) -> Path:
    """The temporary sibling ``.<name>.tmp<pid>`` an atomic write of ``path`` goes through."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path to write; on a clean exit it is renamed over ``path``, else deleted.

    Example::

        with atomic_path(folder / "codes.npy") as tmp:
            np.save(tmp, codes)  # np.save appends .npy to names without it: give the full name
    """
    path = Path(path)
    tmp = temporary_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` through a temporary file and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


@contextlib.contextmanager
def file_lock(path: str | Path, blocking: bool = True) -> Iterator[None]:
    """Holds an exclusive ``flock`` on the file ``path`` (created if missing) for the ``with`` block.

    Args:
        path: the lock file, conventionally ``.<name>.lock`` beside what it guards; its folder must exist.
        blocking: wait for the lock; when False, raise :class:`LockedError` if another process holds it.
    """
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            raise LockedError(f"{path} is held by another process") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def update_file(digest: Any, path: str | Path) -> Any:
    """Feeds the bytes of ``path`` into ``digest`` (a ``hashlib`` object) in chunks; returns it."""
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of the file ``path``."""
    return update_file(hashlib.sha256(), path).hexdigest()


def fingerprint(obj: Any) -> str:
    """Hex sha256 of ``json.dumps(obj, sort_keys=True)``: equal settings give equal keys in any process."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
