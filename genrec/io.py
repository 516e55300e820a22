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
* **Written files, checked when read back.** :func:`file_manifest` records the size, modification
  time and sha256 of files when they are written; :func:`manifest_problem` says what no longer
  matches (a missing, truncated or altered file) when they are read back. The sha256 is compared for
  every file up to :data:`ALWAYS_HASH` bytes and for larger ones whose modification time changed,
  so a checked read of a large unchanged file costs one ``stat``. :func:`save_checked_array` and
  :func:`load_checked_array` do this for ``.npy`` caches through a sidecar ``<name>.json``.

Nothing here knows about datasets, models or training; modules above import it, it imports none
of them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["LockedError", "appended_lines", "atomic_folder", "atomic_path", "atomic_write_bytes", "atomic_write_text", "file_lock",
           "file_manifest",
           "fingerprint", "load_checked_array", "manifest_problem", "save_checked_array", "sha256_file", "update_file"]

CHUNK = 1 << 20
"""Bytes read at a time when hashing or copying files."""

ALWAYS_HASH = 32 << 20
"""Files up to this size are re-hashed on every checked read; larger ones when their mtime changed."""


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


@contextlib.contextmanager
def atomic_folder(folder: str | Path) -> Iterator[Path]:
    """Yields a fresh, empty temporary folder to fill; on a clean exit it replaces ``folder`` (an old one
    is removed first), else it is deleted: a kill never leaves half a saved model."""
    folder = Path(folder)
    tmp = temporary_path(folder)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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


def file_manifest(folder: str | Path, names: list[str]) -> dict[str, list]:
    """``{name: [size, mtime_ns, sha256]}`` of the files ``folder/name``, as written now."""
    manifest = {}
    for name in names:
        stat = (Path(folder) / name).stat()
        manifest[name] = [stat.st_size, stat.st_mtime_ns, sha256_file(Path(folder) / name)]
    return manifest


def manifest_problem(folder: str | Path, manifest: Any) -> str | None:
    """What in ``folder`` no longer matches ``manifest`` (:func:`file_manifest`), or None when all does.

    E.g. ``"data/raw/ml-100k/ml-100k.inter has 1000 bytes, 2 MB were recorded"``: a missing file, another
    size, or another sha256 (checked for small files always, for large ones when the mtime changed).
    """
    if not isinstance(manifest, dict) or not manifest:
        return f"{folder} has no usable record of its files"
    for name, record in sorted(manifest.items()):
        path = Path(folder) / name
        try:
            size, mtime_ns, digest = record
            stat = path.stat()
        except (TypeError, ValueError):
            return f"the record of {path} is malformed"
        except OSError:
            return f"{path} is missing"
        if stat.st_size != size:
            return f"{path} has {stat.st_size} bytes where {size} were written (truncated or replaced)"
        if (stat.st_size <= ALWAYS_HASH or stat.st_mtime_ns != mtime_ns) and sha256_file(path) != digest:
            return f"{path} does not match the sha256 recorded when it was written (altered or corrupt)"
    return None


def check_or_record(folder: str | Path, record: str | Path, names: Any) -> str | None:
    """Compares ``folder``'s files with the manifest in ``record`` (:func:`manifest_problem`); without a
    record, writes one of the files ``names()`` as they are now (a folder from before records existed)
    and trusts them.

    Returns:
        None when the files match (or were just recorded), else what differs.
    """
    record = Path(record)
    if not record.is_file():
        atomic_write_text(record, json.dumps(file_manifest(folder, list(names()))) + "\n")
        return None
    try:
        return manifest_problem(folder, json.loads(record.read_text()))
    except (OSError, ValueError):
        return f"{record} is unreadable"


def save_checked_array(path: str | Path, write: Any) -> None:
    """Writes a ``.npy`` file through ``write(tmp_path)`` and a rename, then its sidecar ``<path>.json``.

    The sidecar records the file's size, mtime and sha256 (:func:`file_manifest`); a reader that finds
    it missing or disagreeing (:func:`load_checked_array`) rebuilds the cache instead of trusting it.
    """
    path = Path(path)
    sidecar = path.with_name(path.name + ".json")
    sidecar.unlink(missing_ok=True)  # a kill between the two writes leaves a cache without a record: rebuilt
    with atomic_path(path) as tmp:
        write(tmp)
    atomic_write_text(sidecar, json.dumps({"files": file_manifest(path.parent, [path.name])}) + "\n")


def load_checked_array(path: str | Path, shape: tuple[int, ...] | None = None, dtype: str = "float32",
                       mmap: bool = False) -> tuple[Any, str | None]:
    """``(array, None)`` for a ``.npy`` written by :func:`save_checked_array` that still matches its
    record and has ``shape`` (None: any 2-D shape) and ``dtype``; else ``(None, why not)``."""
    import numpy as np

    path = Path(path)
    sidecar = path.with_name(path.name + ".json")
    if not path.is_file():
        return None, f"{path} does not exist"
    try:
        manifest = json.loads(sidecar.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None, f"{path} has no readable record {sidecar.name} of its size and sha256"
    problem = manifest_problem(path.parent, manifest)
    if problem is not None:
        return None, problem
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        return None, f"{path} is unreadable ({error})"
    if array.dtype != np.dtype(dtype) or (array.ndim != 2 if shape is None else array.shape != tuple(shape)):
        wanted = "2-D" if shape is None else f"shape {tuple(shape)}"
        return None, f"{path} holds {array.dtype} {array.shape}, expected {dtype} {wanted}"
    return array, None


def appended_lines(path: str | Path, repair: bool = False, who: str = "genrec") -> list[tuple[int, str]]:
    """``(line number, text)`` of every non-blank complete line of an append-only cache file (one record
    per line, written as work proceeds); a missing file has none.

    A torn last line (no trailing newline, as a kill during a write leaves it) is ignored with a note
    on stderr naming ``who`` and the file, and with ``repair`` also cut off the file.
    """
    path = Path(path)
    if not path.is_file():
        return []
    data = path.read_bytes()
    complete = data.rfind(b"\n") + 1
    if complete < len(data):
        print(f"{who}: {path}: ignoring a torn last line of {len(data) - complete} bytes (an interrupted write)"
              + ("; cut off" if repair else ""), file=sys.stderr)
        if repair:
            with open(path, "r+b") as handle:
                handle.truncate(complete)
                handle.flush()
                os.fsync(handle.fileno())
    lines = data[:complete].decode("utf-8", errors="replace").splitlines()
    return [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]
