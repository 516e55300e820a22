"""The comparison table of runs, as Markdown and CSV.

One row per run: ``run``, ``model``, ``dataset``, ``split``, ``protocol``, ``seed``, then the test
metrics, then ``steps``, ``train_s`` (training time without evaluations, seconds), ``peak_rss_mib``
and ``peak_gpu_mib`` (peak host and GPU memory of the process, MiB). An unfinished run has empty test
cells. Which metrics (:func:`choose_metrics`): the ranking metrics ``name@k`` of the main protocol,
ordered NDCG, Recall, Hit, MRR then by k; where no run has any (RQ-VAE runs), every numeric test value.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence

from genrec.report.runs import Run

__all__ = ["INFO_COLUMNS", "TAIL_COLUMNS", "choose_metrics", "rows", "to_csv", "to_markdown"]

INFO_COLUMNS = ["run", "model", "dataset", "split", "protocol", "seed"]
TAIL_COLUMNS = ["steps", "train_s", "peak_rss_mib", "peak_gpu_mib"]
_RANKING = re.compile(r"^(?P<name>[a-z_]+)@(?P<k>\d+)$")
_ORDER = ["ndcg", "recall", "hit", "mrr"]


def choose_metrics(runs: Sequence[Run], wanted: Sequence[str] | None = None) -> list[str]:
    """The test metric columns: ``wanted`` as given (``["all"]``: every numeric test value), else the
    default of the module docstring."""
    present = list(dict.fromkeys(key for run in runs for key in run.test))
    if wanted and list(wanted) != ["all"]:
        return list(wanted)
    ranking = [key for key in present if _RANKING.match(key)]
    if ranking and not wanted:
        return sorted(ranking, key=_ranking_order)
    return sorted(ranking, key=_ranking_order) + [key for key in present if key not in ranking]


def _ranking_order(key: str) -> tuple[int, str, int]:
    match = _RANKING.match(key)
    name = match["name"]
    return (_ORDER.index(name) if name in _ORDER else len(_ORDER), name, int(match["k"]))


def rows(runs: Sequence[Run], metrics: Sequence[str]) -> list[dict[str, object]]:
    """One dict per run with the columns ``INFO_COLUMNS + metrics + TAIL_COLUMNS`` (None: no value)."""
    out = []
    for run in runs:
        row: dict[str, object] = {"run": run.name, "model": run.model}
        row.update({key: run.info.get(key) for key in INFO_COLUMNS[2:]})
        row.update({metric: run.test.get(metric) for metric in metrics})
        row.update(steps=run.info.get("steps"), train_s=run.info.get("train_seconds"),
                   peak_rss_mib=run.info.get("peak_rss_mib"), peak_gpu_mib=run.info.get("peak_gpu_mib"))
        out.append(row)
    return out


def to_csv(table: list[dict[str, object]]) -> str:
    """The rows as CSV with a header line; empty cells for missing values, numbers unrounded."""
    if not table:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(table[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: "" if value is None else value for key, value in row.items()} for row in table)
    return buffer.getvalue()


def to_markdown(table: list[dict[str, object]]) -> str:
    """The rows as a GitHub Markdown table: metrics to 4 decimals, seconds to 0.1, memory in whole MiB;
    a dash for a missing value; the best value of each ranking metric among the runs of one dataset,
    split and protocol in bold."""
    if not table:
        return ""
    columns = list(table[0])
    best = {}  # (column, comparable group) -> best value; runs compare within one dataset, split and protocol
    for row in table:
        for column in filter(_RANKING.match, columns):
            key = (column, row["dataset"], row["split"], row["protocol"])
            if isinstance(row[column], float):
                best.setdefault(key, []).append(row[column])
    best = {key: max(values) for key, values in best.items() if len(values) > 1}
    lines = ["| " + " | ".join(columns) + " |",
             "| " + " | ".join("---:" if column not in INFO_COLUMNS else "---" for column in columns) + " |"]
    for row in table:
        cells = []
        for column in columns:
            text = _cell(column, row[column])
            key = (column, row["dataset"], row["split"], row["protocol"])
            cells.append(f"**{text}**" if key in best and row[column] == best[key] else text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(column: str, value: object) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        if column == "train_s":
            return f"{value:.1f}"
        if column.endswith("_mib"):
            return f"{value:.0f}"
        return f"{value:.4f}"
    return str(value).replace("|", "\\|")
