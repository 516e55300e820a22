"""Progress output fit for a terminal and for a log file.

Every loop in genrec that reports progress goes through :func:`progress`. On a terminal (the
stream's ``isatty()``) it is an ordinary tqdm bar. Anywhere else (output redirected to a file, a
pipe, a CI log) a bar's carriage returns and escape codes would pile up, so it prints plain lines
instead, each a complete sentence ending in a newline::

    train runs/sasrec/ml100k_debug: 120/1000 steps (12%), 0:00:31 elapsed, 3.9 steps/s, loss=6.1234, epoch=1

A line is printed each time another ``every`` fraction of the total is done (10% by default) and
at least every ``interval`` seconds (30 s) while the loop runs, plus a last line at ``close()``.
Transient loops (``leave=False``, e.g. one evaluation among many) print only on the time interval,
so a short one is silent and a long one is still visible.

:func:`announce` prints one labelled sub-step (``genrec: semantic IDs: building ...``) to stderr.
:func:`quiet_library_bars` turns off the Hugging Face libraries' own bars (weight loading) when
stderr is not a terminal; the trainers' command line calls it.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, Callable, Iterable, Iterator, TextIO

from tqdm.auto import tqdm

__all__ = ["PlainProgress", "announce", "progress", "quiet_library_bars"]


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             initial: int = 0, leave: bool = True, disable: bool = False, stream: TextIO | None = None,
             interval: float = 30.0, every: float = 0.1):
    """A progress bar on a terminal, periodic plain lines elsewhere.

    Args:
        iterable: iterated over, one update per item (``None``: call ``update`` yourself).
        total: number of updates expected (default: ``len(iterable)`` when it has one).
        desc: label of the loop, printed at the start of every line.
        unit: what one update counts (``step``, ``item``, ``batch``).
        initial: updates already done (a resumed run).
        leave: keep the bar after ``close``; plain output: ``False`` prints only on the interval.
        disable: no output at all (e.g. on every process but the main one).
        stream: where to write (default: ``sys.stderr`` at call time).
        interval: plain output: seconds between lines at most.
        every: plain output: a line each time this fraction of ``total`` is done.

    Returns:
        A tqdm bar, or a :class:`PlainProgress` with the same ``update`` / ``set_postfix`` /
        ``close`` / iteration / ``with`` interface.
    """
    stream = sys.stderr if stream is None else stream
    if disable or _is_terminal(stream):
        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=leave, disable=disable,
                    file=stream, dynamic_ncols=True)
    return PlainProgress(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=leave, stream=stream,
                         interval=interval, every=every)


def announce(label: str, message: str, stream: TextIO | None = None) -> None:
    """Prints one labelled sub-step, e.g. ``genrec: semantic IDs: building X with Y``, to stderr."""
    print(f"genrec: {label}: {message}", file=sys.stderr if stream is None else stream, flush=True)


def quiet_library_bars(stream: TextIO | None = None) -> None:
    """Turns off transformers' and huggingface_hub's progress bars unless ``stream`` (stderr) is a terminal."""
    if _is_terminal(sys.stderr if stream is None else stream):
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when huggingface_hub is imported
    if "transformers" in sys.modules:
        from transformers.utils import logging

        logging.disable_progress_bar()
    elif "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class PlainProgress:
    """Progress as plain, newline-terminated lines (see the module docstring); tqdm's small interface."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, leave: bool = True, stream: TextIO | None = None,
                 interval: float = 30.0, every: float = 0.1, clock: Callable[[], float] = time.monotonic):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n, self.leave, self.interval, self.every = initial, leave, interval, every
        self.stream = sys.stderr if stream is None else stream
        self.clock = clock
        self.postfix = ""
        self.lines = 0
        self.closed = False
        self._initial = initial
        self._start = self._last = clock()
        self._bucket = self._bucket_of(initial)
        self._printed_n: int | None = None

    def __iter__(self) -> Iterator[Any]:
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self.total or 0

    def update(self, n: int = 1) -> None:
        """Counts ``n`` more; prints a line when another ``every`` fraction is done or ``interval`` passed."""
        self.n += n
        now = self.clock()
        bucket = self._bucket_of(self.n)
        if now - self._last >= self.interval or (self.leave and bucket > self._bucket):
            self._print(now)
        self._bucket = max(self._bucket, bucket)

    def set_postfix(self, **values: Any) -> None:
        """Values appended to every following line (``loss=0.1234, epoch=2``)."""
        self.postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def close(self) -> None:
        """Prints the last line (unless it was just printed; a transient loop that printed nothing stays silent)."""
        if self.closed:
            return
        self.closed = True
        if self._printed_n != self.n and (self.leave or self.lines):
            self._print(self.clock())

    def _bucket_of(self, n: int) -> int:
        if not self.total or self.every <= 0:
            return 0
        return math.floor(min(n, self.total) / self.total / self.every + 1e-9)

    def _print(self, now: float) -> None:
        elapsed = now - self._start
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        units = self.unit + ("es" if self.unit.endswith(("s", "x", "ch", "sh")) else "s")  # batches, steps
        parts = [f"{done} {units}" + (f" ({100 * self.n / self.total:.0f}%)" if self.total else ""),
                 f"{_clock_time(elapsed)} elapsed"]
        if elapsed > 0 and self.n > self._initial:
            parts.append(f"{(self.n - self._initial) / elapsed:.3g} {units}/s")
        if self.postfix:
            parts.append(self.postfix)
        label = f"{self.desc}: " if self.desc else ""
        print(label + ", ".join(parts), file=self.stream, flush=True)
        self._last, self._printed_n = now, self.n
        self.lines += 1


def _clock_time(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
