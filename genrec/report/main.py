"""The ``python -m genrec.report`` command (see :mod:`genrec.report`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from genrec.report.plots import PlotsUnavailable, plot_curves, plot_test_metrics
from genrec.report.runs import ReportError, Run, find_runs
from genrec.report.table import choose_metrics, rows, to_csv, to_markdown
from genrec.io import atomic_write_text

__all__ = ["bar_metrics", "main", "write_report"]

MAX_BARS = 8


def bar_metrics(metrics: Sequence[str]) -> list[str]:
    """The metrics of the bar chart: those at cutoff 10 when there are any, else the first
    :data:`MAX_BARS` table metrics."""
    at_ten = [metric for metric in metrics if metric.endswith("@10")]
    return (at_ten or list(metrics))[:MAX_BARS]


def write_report(runs: list[Run], out: Path, metrics: Sequence[str] | None = None, plots: bool = True,
                 bars: Sequence[str] | None = None) -> dict[str, Path]:
    """Writes the table files and (``plots``) the PNGs of ``runs`` into ``out``; returns what was written
    by kind (``markdown``, ``csv``, ``curves``, ``test_metrics``).

    Raises:
        PlotsUnavailable: ``plots`` without matplotlib (the tables are written first).
    """
    out.mkdir(parents=True, exist_ok=True)
    columns = choose_metrics(runs, metrics)
    table = rows(runs, columns)
    written = {"markdown": out / "runs.md", "csv": out / "runs.csv"}
    atomic_write_text(written["markdown"], to_markdown(table))
    atomic_write_text(written["csv"], to_csv(table))
    if plots:
        for kind, path in (("curves", plot_curves(runs, out / "curves.png")),
                           ("test_metrics", plot_test_metrics(runs, list(bars or bar_metrics(columns)),
                                                              out / "test_metrics.png"))):
            if path is not None:
                written[kind] = path
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genrec.report",
                                     description="Compare runs: a Markdown/CSV table and PNG plots.")
    parser.add_argument("paths", nargs="+", metavar="RUN_DIR", help="run folders, or folders of runs (e.g. runs/)")
    parser.add_argument("--out", default="runs/report",
                        help="folder for runs.md, runs.csv and the PNGs (default: runs/report)")
    parser.add_argument("--metrics", default=None,
                        help="comma-separated test metrics for the table (default: the ranking metrics name@k; "
                             "'all': every numeric test value)")
    parser.add_argument("--bar-metrics", default=None,
                        help="comma-separated test metrics for the bar chart (default: the table's @10 metrics)")
    parser.add_argument("--no-plots", action="store_true", help="write the table only (no matplotlib needed)")
    args = parser.parse_args(argv)
    split = lambda text: [part.strip() for part in text.split(",") if part.strip()] if text else None  # noqa: E731
    try:
        runs = find_runs(args.paths)
        written = write_report(runs, Path(args.out), split(args.metrics), plots=False)
        print(written["markdown"].read_text(), end="")
        if not args.no_plots:
            written = write_report(runs, Path(args.out), split(args.metrics), bars=split(args.bar_metrics))
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except PlotsUnavailable as error:
        print(f"genrec.report: wrote the table ({written['markdown']}, {written['csv']}) but no plots: {error}",
              file=sys.stderr)
        return 1
    paths = ", ".join(str(path) for path in written.values())
    print(f"genrec.report: {len(runs)} run{'s' if len(runs) != 1 else ''}; wrote {paths}", file=sys.stderr)
    return 0
