"""Compare runs: a table (Markdown and CSV) and PNG plots from run folders.

    python -m genrec.report runs/                       # every run below runs/
    python -m genrec.report runs/sasrec/ml100k runs/tiger/ml100k --out runs/report/ml100k
    python -m genrec.report runs/ --metrics ndcg@10,recall@10 --no-plots

writes ``<out>/runs.md`` and ``<out>/runs.csv`` (one row per run: model, dataset, split, protocol,
seed, test metrics, steps, training time, peak memory; :mod:`genrec.report.table`) and, with
matplotlib installed (``pip install -e '.[plots]'``), ``<out>/curves.png`` (training loss and
validation metric per step, one line per run) and ``<out>/test_metrics.png`` (test metrics as grouped
bars; :mod:`genrec.report.plots`). Runs are read from their ``metrics.json``, ``log.jsonl`` and
``config.gin`` (:mod:`genrec.report.runs`); nothing is recomputed.
"""

from genrec.report.main import main, write_report
from genrec.report.runs import ReportError, Run, find_runs, read_run

__all__ = ["ReportError", "Run", "find_runs", "main", "read_run", "write_report"]
