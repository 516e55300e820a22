"""python -m genrec.report on tiny synthetic run folders: the table (always), the plots (with matplotlib), the
messages for a missing matplotlib and for folders without runs."""

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from genrec.report import ReportError, find_runs, main, write_report
from genrec.report.table import choose_metrics

REPO = Path(__file__).resolve().parents[1]


def make_run(folder: Path, model: str, test: dict | None, losses=(3.0, 2.0, 1.5), valid=(0.1, 0.2), seed=7,
             dataset="ml-100k", metric="ndcg@10", **metrics) -> Path:
    """A run folder as fit writes it: config.gin (operative), log.jsonl and (finished runs) metrics.json."""
    folder.mkdir(parents=True)
    (folder / "config.gin").write_text(
        f"# Parameters for experiment:\nexperiment.dataset = '{dataset}'\nexperiment.protocol = 'full'\n"
        f"experiment.split = 'loo'\n\nfit.metric = '{metric}'\nfit.batch_size = 16\n"
        f"train_{model}.run_dir = '{folder}'\ntrain_{model}.seed = {seed}\n")
    records = [{"step": 10 * (i + 1), "epoch": 0, "loss": loss, "lr": 0.001} for i, loss in enumerate(losses)]
    records += [{"step": 15 * (i + 1), "epoch": i, "valid": {metric: value, "sampled": {"hit@10": 0.5}}, "best": value}
                for i, value in enumerate(valid)]
    lines = [json.dumps(r) for r in sorted(records, key=lambda r: r["step"])]
    if test is not None:
        lines.append(json.dumps({"step": 30, "epoch": 2, "test": test}))
    (folder / "log.jsonl").write_text("\n".join(lines) + "\n" + ('{"step": 4' if test is None else ""))  # torn
    if test is not None:
        result = {"dataset": dataset, "split": "loo", "protocol": "full", "seed": seed, "valid": {}, "test": test,
                  "steps": 30, "train_seconds": 12.345, "peak_rss_mib": 512.4, **metrics}
        (folder / "metrics.json").write_text(json.dumps(result))
    return folder


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    make_run(root / "sasrec" / "ml100k", "sasrec",
             {"ndcg@10": 0.058, "recall@10": 0.136, "ndcg@5": 0.033, "sampled": {"hit@10": 0.6}, "usage": [1, 2]})
    make_run(root / "tiger" / "ml100k", "tiger", {"ndcg@10": 0.034, "recall@10": 0.069, "valid_item_rate": 1.0},
             losses=(2.0, 1.0), peak_gpu_mib=2048.0)
    make_run(root / "tiger" / "unfinished", "tiger", None, losses=(5.0,), valid=(0.01,))
    make_run(root / "rqvae" / "ml100k", "rqvae", {"loss": 0.5, "collision_rate": 0.1}, losses=(1.0, 0.5),
             valid=(0.8, 0.7), metric="loss")
    (root / "lcrec" / "model").mkdir(parents=True)  # not a run: no metrics.json or log.jsonl
    return root


def test_runs_are_read_from_their_files(runs):
    found = find_runs([runs])
    assert [run.name for run in found] == ["rqvae/ml100k", "sasrec/ml100k", "tiger/ml100k", "tiger/unfinished"]
    sasrec = found[1]
    assert sasrec.model == "sasrec" and sasrec.info["seed"] == 7 and sasrec.info["train_seconds"] == 12.345
    assert sasrec.test == {"ndcg@10": 0.058, "recall@10": 0.136, "ndcg@5": 0.033, "sampled/hit@10": 0.6}
    assert sasrec.loss == [(10, 3.0), (20, 2.0), (30, 1.5)] and sasrec.valid == [(15, 0.1), (30, 0.2)]
    unfinished = found[3]
    assert not unfinished.finished and unfinished.info["dataset"] == "ml-100k"  # from config.gin
    assert unfinished.loss == [(10, 5.0)]  # the torn last line is skipped
    assert found[0].valid_metric == "loss" and found[0].valid == [(15, 0.8), (30, 0.7)]
    # a run folder given directly is named by its folder; the same run twice is listed once
    again = find_runs([runs / "tiger" / "ml100k", runs / "tiger"])
    assert [run.name for run in again] == ["ml100k", "unfinished"]


def test_table_markdown_and_csv(runs, tmp_path):
    found = find_runs([runs])
    assert choose_metrics(found) == ["ndcg@5", "ndcg@10", "recall@10"]
    assert choose_metrics(found, ["all"])[:3] == ["ndcg@5", "ndcg@10", "recall@10"]
    assert "collision_rate" in choose_metrics(found, ["all"])
    written = write_report(found, tmp_path / "report", plots=False)
    assert set(written) == {"markdown", "csv"}
    table = list(csv.DictReader(io.StringIO(written["csv"].read_text())))
    assert list(table[0]) == ["run", "model", "dataset", "split", "protocol", "seed", "ndcg@5", "ndcg@10",
                              "recall@10", "steps", "train_s", "peak_rss_mib", "peak_gpu_mib"]
    tiger = table[2]
    assert tiger["model"] == "tiger" and tiger["ndcg@10"] == "0.034" and tiger["ndcg@5"] == ""
    assert tiger["peak_gpu_mib"] == "2048.0" and tiger["train_s"] == "12.345"
    assert table[3]["run"] == "tiger/unfinished" and table[3]["ndcg@10"] == "" and table[3]["seed"] == ""
    markdown = written["markdown"].read_text().splitlines()
    assert markdown[0].startswith("| run | model | dataset | split | protocol | seed | ndcg@5 | ndcg@10 |")
    assert markdown[3] == ("| sasrec/ml100k | sasrec | ml-100k | loo | full | 7 | 0.0330 | **0.0580** | **0.1360** "
                           "| 30 | 12.3 | 512 | - |")
    assert markdown[4].startswith("| tiger/ml100k | tiger | ml-100k | loo | full | 7 | - | 0.0340 | 0.0690 |")


def test_plots(runs, tmp_path):
    pytest.importorskip("matplotlib")
    written = write_report(find_runs([runs]), tmp_path / "report")
    for kind in ("curves", "test_metrics"):
        data = written[kind].read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, kind
    # no finished run with the asked metrics: no bar chart, and no error
    written = write_report(find_runs([runs / "tiger" / "unfinished"]), tmp_path / "only_unfinished")
    assert "curves" in written and "test_metrics" not in written


def test_command_line(runs, tmp_path, capsys, monkeypatch):
    out = tmp_path / "report"
    assert main([str(runs), "--out", str(out), "--metrics", "ndcg@10", "--no-plots"]) == 0
    printed = capsys.readouterr()
    assert "| run | model | dataset | split | protocol | seed | ndcg@10 | steps |" in printed.out
    assert sorted(p.name for p in out.iterdir()) == ["runs.csv", "runs.md"]

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if matplotlib were not installed
    assert main([str(runs), "--out", str(out)]) == 1
    message = capsys.readouterr().err
    assert "wrote the table" in message and "pip install -e '.[plots]'" in message
    assert (out / "runs.md").is_file()

    assert main([str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main([str(runs / "lcrec")]) == 2
    assert "holds no run" in capsys.readouterr().err
    with pytest.raises(ReportError, match="holds no run"):
        find_runs([runs / "lcrec"])


def test_module_entry_point(runs, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "genrec.report", str(runs), "--out", str(tmp_path / "r"),
                           "--no-plots"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "4 runs; wrote" in proc.stderr and "| sasrec/ml100k |" in proc.stdout
