"""genrec.io: atomic writes leave the old file or the new one, locks exclude, hashes are stable."""

import hashlib
import multiprocessing
import time

import pytest

from genrec.io import (LockedError, atomic_path, atomic_write_bytes, atomic_write_text, file_lock, fingerprint,
                       sha256_file)


def test_atomic_writes_replace_whole_files_and_leave_nothing_behind(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "old")
    atomic_write_text(target, "néw\n")
    assert target.read_text(encoding="utf-8") == "néw\n"
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text(encoding="utf-8") == "néw\n"  # the old file, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin"]  # no temporary files


def _hold(path, seconds):
    with file_lock(path):
        time.sleep(seconds)


def test_file_lock_excludes_other_processes(tmp_path):
    lock = tmp_path / ".x.lock"
    holder = multiprocessing.get_context("spawn").Process(target=_hold, args=(lock, 3.0))
    holder.start()
    deadline = time.time() + 60
    while time.time() < deadline:  # wait until the child holds the lock
        try:
            with file_lock(lock, blocking=False):
                time.sleep(0.05)
        except LockedError:
            break
    else:
        pytest.fail("the child process never took the lock")
    with pytest.raises(LockedError, match=r"\.x\.lock"):
        with file_lock(lock, blocking=False):
            pass
    started = time.time()
    with file_lock(lock):  # blocking: waits until the child releases it
        waited = time.time() - started
    holder.join()
    assert waited > 0.5 and holder.exitcode == 0


def test_hashes(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc" * 1_000_000)  # several chunks
    assert sha256_file(path) == hashlib.sha256(b"abc" * 1_000_000).hexdigest()
    assert fingerprint({"b": 1, "a": [1, 2]}) == fingerprint({"a": [1, 2], "b": 1})
    assert fingerprint({"a": 1}) == hashlib.sha256(b'{"a": 1}').hexdigest()
