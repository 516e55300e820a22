"""PNG plots of runs (matplotlib, an optional extra: ``pip install -e '.[plots]'``).

* ``curves.png``: the training loss per logged step of every run (left; a log scale when the losses
  span more than 20x), and per validation metric (``fit.metric``) its value at every validation
  (one panel per metric, so an RQ-VAE's loss and a recommender's NDCG are never on one axis);
* ``test_metrics.png``: the test metrics of the finished runs as grouped bars, one group per metric,
  one colour per run (the same colour as in ``curves.png``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from genrec.report.runs import Run

__all__ = ["PlotsUnavailable", "plot_curves", "plot_test_metrics", "pyplot"]

INSTALL = "pip install -e '.[plots]' (or pip install matplotlib)"


class PlotsUnavailable(ImportError):
    """matplotlib is not installed."""


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend; :class:`PlotsUnavailable` naming the install
    command when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        raise PlotsUnavailable(f"the plots need matplotlib, which is not installed: {INSTALL}") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _styles(runs: Sequence[Run]) -> dict[str, dict]:
    """One colour (and, past 20 runs, a line style) per run, the same in every plot."""
    plt = pyplot()
    cmap = plt.get_cmap("tab10" if len(runs) <= 10 else "tab20")
    return {run.name: {"color": cmap(i % cmap.N), "linestyle": ("-", "--", ":", "-.")[i // cmap.N % 4]}
            for i, run in enumerate(runs)}


def plot_curves(runs: Sequence[Run], path: Path) -> Path | None:
    """Writes ``curves.png`` (module docstring) to ``path``; None when no run logged a loss or a validation."""
    plt = pyplot()
    metrics = list(dict.fromkeys(run.valid_metric for run in runs if run.valid))
    with_loss = [run for run in runs if run.loss]
    if not metrics and not with_loss:
        return None
    styles = _styles(runs)
    panels = 1 + len(metrics)
    legend = min(4.0, 0.7 + 0.075 * max(len(run.name) for run in runs))  # inches for the legend
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels + legend, 4.2), squeeze=False)
    axes = axes[0]
    for run in with_loss:
        steps, values = zip(*run.loss)
        axes[0].plot(steps, values, **styles[run.name], linewidth=1.2, label=run.name)
    low = min((v for run in with_loss for _, v in run.loss if v > 0), default=None)
    high = max((v for run in with_loss for _, v in run.loss), default=None)
    if low and high and high / low > 20:
        axes[0].set_yscale("log")
    axes[0].set(title="training loss", xlabel="optimizer step", ylabel="loss (mean over logged steps)")
    for ax, metric in zip(axes[1:], metrics):
        for run in runs:
            if run.valid and run.valid_metric == metric:
                steps, values = zip(*run.valid)
                ax.plot(steps, values, **styles[run.name], marker="o", markersize=3, linewidth=1.2,
                        label=run.name)
        ax.set(title=f"validation {metric}", xlabel="optimizer step", ylabel=metric)
    for ax in axes:
        ax.grid(alpha=0.3)
    handles = {run.name: None for run in runs if run.loss or run.valid}
    lines = [plt.Line2D([], [], **styles[name], linewidth=2) for name in handles]
    right = 1 - legend / (5.2 * panels + legend)
    fig.tight_layout(rect=(0, 0, right, 1))
    fig.legend(lines, list(handles), loc="center left", bbox_to_anchor=(right, 0.5), fontsize=8, frameon=False)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_test_metrics(runs: Sequence[Run], metrics: Sequence[str], path: Path) -> Path | None:
    """Writes ``test_metrics.png`` (module docstring) to ``path``; None when no finished run has any of
    ``metrics``."""
    plt = pyplot()
    finished = [run for run in runs if any(metric in run.test for metric in metrics)]
    metrics = [metric for metric in metrics if any(metric in run.test for run in finished)]
    if not finished:
        return None
    styles = _styles(runs)
    width = 0.8 / len(finished)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(metrics) * max(1.0, len(finished) / 3)) + 2.4, 4.2))
    for i, run in enumerate(finished):
        xs = [m + (i - (len(finished) - 1) / 2) * width for m in range(len(metrics))]
        values = [run.test.get(metric, 0.0) for metric in metrics]
        style = styles[run.name]
        hatch = {"-": None, "--": "//", ":": "..", "-.": "xx"}[style["linestyle"]]
        bars = ax.bar(xs, values, width=width * 0.95, color=style["color"], hatch=hatch, label=run.name)
        if len(finished) * len(metrics) <= 24:
            ax.bar_label(bars, labels=[f"{v:.3f}" if metric in run.test else "" for v, metric in zip(values, metrics)],
                         fontsize=6, rotation=90, padding=2)
    ax.set_xticks(range(len(metrics)), metrics)
    groups = {tuple(str(run.info.get(key, "")) for key in ("dataset", "split", "protocol")) for run in finished}
    common = f" ({', '.join(part for part in groups.pop() if part)})" if len(groups) == 1 else ""
    ax.set(title=f"test metrics{common}", ylabel="value")
    ax.margins(y=0.15)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
