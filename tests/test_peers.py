"""The RecBole peer's atomic-file converter and the SASRec benchmark's reading of the peer's JSON line.

No network and no virtualenv: the converter writes a tiny hand-made log, read back by genrec's own
RecBole reader; the parser reads hand-written lines.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from genrec.data.readers import InteractionLog, read_recbole

from scripts import load_script  # tests/scripts.py

REPO = Path(__file__).resolve().parents[1]


peers = load_script("recbole_sasrec_peer", "benchmarks/peers/recbole_sasrec.py")
bench = load_script("sasrec_benchmark", "benchmarks/sasrec.py")


def tiny_log(**changes) -> InteractionLog:
    fields = dict(name="tiny", users=["u1", "u1", "u2"], items=["10", "Toy Story (1995)", "10"],
                  timestamps=np.array([881250949.0, 881250949.0, 5.5]), ratings=np.array([3.0, 4.5, 1.0]))
    return InteractionLog(**{**fields, **changes})


def test_inter_file_is_recbole_atomic_format(tmp_path):
    path = peers.write_recbole_inter(tiny_log(), tmp_path)
    assert path == tmp_path / "tiny" / "tiny.inter"
    assert path.read_text(encoding="utf-8").splitlines() == [
        "user_id:token\titem_id:token\trating:float\ttimestamp:float",
        "u1\t10\t3\t881250949",
        "u1\tToy Story (1995)\t4.5\t881250949",
        "u2\t10\t1\t5.5",
    ]
    back = read_recbole(path.parent, "tiny", "fix")
    assert back.users == ["u1", "u1", "u2"] and back.items == ["10", "Toy Story (1995)", "10"]
    np.testing.assert_array_equal(back.timestamps, [881250949.0, 881250949.0, 5.5])
    np.testing.assert_array_equal(back.ratings, [3.0, 4.5, 1.0])
    assert not [p for p in path.parent.iterdir() if p.name != "tiny.inter"]  # no temporary file left


def test_inter_file_without_ratings_and_bad_ids(tmp_path):
    path = peers.write_recbole_inter(tiny_log(ratings=None), tmp_path)
    assert path.read_text(encoding="utf-8").splitlines()[:2] == ["user_id:token\titem_id:token\ttimestamp:float",
                                                                  "u1\t10\t881250949"]
    for bad in ("a\tb", 'say "hi"'):
        with pytest.raises(ValueError, match="item id"):
            peers.write_recbole_inter(tiny_log(items=["10", bad, "10"]), tmp_path / "bad")
    assert not (tmp_path / "bad" / "tiny" / "tiny.inter").exists()


def test_venv_folder_is_keyed_by_the_pins(monkeypatch, tmp_path):
    monkeypatch.setenv("GENREC_PEERS_DIR", str(tmp_path))
    first = peers.default_venv()
    assert first.parent == tmp_path and first.name == f"recbole-1.2.1-{peers.requirements_key()}"
    monkeypatch.setattr(peers, "REQUIREMENTS", (*peers.REQUIREMENTS[:-1], "torch==2.12.0"))
    assert peers.default_venv() != first


def peer_record(**changes) -> dict:
    metrics = {key: 0.05 for key in peers.METRIC_KEYS}
    return {"peer": "recbole", "dataset": "ml-100k", "seed": 2020, **metrics, "ndcg@10": 0.064,
            "train_seconds": 1000.0, "threads": 1, "loadavg_before": [1.0, 1.0, 1.0], **changes}


def test_parse_peer_line_takes_the_last_peer_line_among_logs():
    old, new = peer_record(seed=1), peer_record()
    text = "\n".join(["12 Nov 10:00 INFO epoch 0 training", json.dumps(old), "{not json", json.dumps({"x": 1}),
                      json.dumps(new), ""])
    assert bench.parse_peer_line(text, "log", "ml-100k") == new


@pytest.mark.parametrize("text, message", [
    ("epoch 0\n{\"benchmark\": \"sasrec\"}\n", "no RecBole peer line"),
    (json.dumps(peer_record(dataset="ml-1m")), "is for 'ml-1m'"),
    (json.dumps({k: v for k, v in peer_record().items() if k != "mrr@10"}), "lacks \\['mrr@10'\\]"),
])
def test_parse_peer_line_errors(text, message):
    with pytest.raises(ValueError, match=message):
        bench.parse_peer_line(text, "peer.jsonl", "ml-100k")


def test_compare_ratios():
    ours = {"ndcg@10": 0.0672, "ndcg@5": 0.05, "mrr@10": 0.05, "recall@10": 0.1, "train_seconds": 200.0}
    ratios = bench.compare(ours, peer_record())
    assert ratios["ndcg@10_vs_recbole"] == 1.05 and ratios["recall@10_vs_recbole"] == 2.0
    assert ratios["time_fraction_of_recbole"] == 0.2


def test_exported_split_is_genrec_leave_one_out(tmp_path):
    from genrec.data.datasets import load_dataset

    # RecBole's order can differ from file order (float32 ties): "b" before "a" for user u1.
    split = {"u1": {"train": ["b", "a", "c"], "valid": "a", "test": "d"},
             "u2": {"train": ["d"], "valid": "b", "test": "c"}}
    path = peers.split_to_inter(split, tmp_path / "ml-100k-recbole")
    assert path == tmp_path / "ml-100k-recbole" / "ml-100k-recbole.inter"
    interactions, _ = load_dataset(f"recbole:{path.parent}")
    loo = interactions.split("loo")
    items = interactions.item_ids
    back = {interactions.user_ids[user]: {"train": [items[i] for i in loo.train[user]]}
            for user in range(interactions.num_users)}
    for which in ("valid", "test"):
        rows = getattr(loo, which)
        for user, target in zip(rows.users, rows.targets):
            back[interactions.user_ids[user]][which] = items[target]
    assert back == split


def test_same_split_passes_the_split_folder_to_the_peer(monkeypatch, tmp_path):
    seen = {}

    def fake_run(command, **kwargs):
        seen["command"] = command
        return subprocess.CompletedProcess(command, 0, stdout='{"peer": "recbole", "dataset": "ml-100k", "seed": 1}')

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    with pytest.raises(ValueError, match="lacks"):  # the fake line has no metrics; the command is what matters
        bench.run_peer("ml-100k", 1, 2, 1, str(tmp_path / "split"))
    assert seen["command"][-2:] == ["--split-out", str(tmp_path / "split")] and "--epochs" in seen["command"]
    monkeypatch.setattr(sys, "argv", ["sasrec.py", "--same-split"])
    with pytest.raises(SystemExit, match="--same-split needs --run-peer"):
        bench.main()


def test_equal_wall_needs_a_peer(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["sasrec.py", "--equal-wall"])
    with pytest.raises(SystemExit, match="--equal-wall needs a peer"):
        bench.main()


def seed_row(seed: int, ndcg: float, peer_ndcg: float) -> dict:
    ours = {key: 0.1 for key in bench.KEYS}
    ours.update({"ndcg@10": ndcg, "valid_ndcg@10": 0.07, "train_seconds": 100.0, "cpu_seconds": 90.0})
    peer = peer_record(seed=seed, **{"ndcg@10": peer_ndcg, "train_seconds": 1000.0})
    row = {"dataset": "ml-100k", "split_dataset": None, "split": "loo", "protocol": "full", "seed": seed,
           "config": "c.gin", "bindings": [], "threads": 1, "loadavg_before": [1.0] * 3, "loadavg_after": [2.0] * 3,
           **ours, "recbole": peer}
    return {**row, **bench.compare(row, peer)}


def test_summarise_means_and_ratio_of_means():
    out = bench.summarise([seed_row(2020, 0.06, 0.05), seed_row(2021, 0.07, 0.07)])
    assert out["seeds"] == [2020, 2021] and out["mean"]["ndcg@10"] == 0.065
    assert out["recbole_mean"]["ndcg@10"] == 0.06
    assert out["ndcg@10_vs_recbole"] == round(0.065 / 0.06, 3)  # the ratio of the means, not the mean of ratios
    assert out["ndcg@10_vs_recbole_per_seed"] == [1.2, 1.0]
    assert out["time_fraction_of_recbole"] == 0.1 and out["train_seconds"] == 200.0
    assert len(out["per_seed"]) == 2 and out["loadavg"] == [[1.0] * 3 + [2.0] * 3] * 2


def test_seeds_need_a_peer_line_each(monkeypatch, tmp_path):
    one = tmp_path / "p2020.jsonl"
    one.write_text(json.dumps(peer_record()) + "\n", encoding="utf-8")
    monkeypatch.setattr(sys, "argv", ["sasrec.py", "--seeds", "2020", "2021", "--peer-json", str(one)])
    with pytest.raises(SystemExit, match="no --peer-json file holds the peer's seed 2021"):
        bench.main()
    monkeypatch.setattr(sys, "argv", ["sasrec.py", "--peer-json", str(one), "--peer-json", str(one)])
    with pytest.raises(SystemExit, match="two --peer-json files hold the peer's seed 2020"):
        bench.main()
    monkeypatch.setattr(sys, "argv", ["sasrec.py", "--seeds", "2020", "2020"])
    with pytest.raises(SystemExit, match="repeats a seed"):
        bench.main()


class FakeRunner:
    """Stands in for RecBole's runner process: prints the given lines, then exits with ``returncode``."""

    def __init__(self, lines: list[str], returncode: int = 0):
        self.lines, self.returncode, self.commands = lines, returncode, []

    def __call__(self, command, **kwargs):
        self.commands.append(command)
        self.stdout = iter(self.lines)
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_split_only_writes_the_split_and_trains_nothing(monkeypatch, tmp_path):
    split = {"u1": {"train": ["10", "11"], "valid": "12", "test": "10"}}
    (tmp_path / "split.json").write_text(json.dumps(split), encoding="utf-8")
    runner = FakeRunner(["RecBole log line\n", f"RECBOLE_SPLIT {tmp_path / 'split.json'}\n"])
    monkeypatch.setattr(peers, "ensure_venv", lambda venv: Path(sys.executable))
    monkeypatch.setattr(peers, "read_log", lambda name, folder: tiny_log())
    monkeypatch.setattr(peers.subprocess, "Popen", runner)
    out = peers.run_peer("ml-100k", split_out=str(tmp_path / "split"), split_only=True)
    assert "--split-only" in runner.commands[0] and "--split-out" in runner.commands[0]
    assert out["split_dataset"] == f"recbole:{(tmp_path / 'split').resolve()}" and "ndcg@10" not in out
    assert (tmp_path / "split" / "split.inter").exists()
    # a runner that exits without writing the split is an error, not an empty result
    monkeypatch.setattr(peers.subprocess, "Popen", FakeRunner(["RecBole log line\n"]))
    with pytest.raises(peers.PeerError, match="failed"):
        peers.run_peer("ml-100k", split_out=str(tmp_path / "other"), split_only=True)
    with pytest.raises(peers.PeerError, match="--split-out"):
        peers.run_peer("ml-100k", split_only=True)


PEER_LINES = REPO / "docs" / "runs" / "sasrec_peer_ml100k"


def test_committed_peer_lines_parse_one_per_seed():
    files = sorted(PEER_LINES.glob("seed*.jsonl"))
    assert [f.name for f in files] == ["seed2020.jsonl", "seed2021.jsonl", "seed2022.jsonl", "seed2023.jsonl"]
    for path in files:
        peer = bench.parse_peer_line(path.read_text(encoding="utf-8"), str(path), "ml-100k")
        assert path.name == f"seed{peer['seed']}.jsonl" and peer["threads"] == 1
        assert peer["recbole_version"] == "1.2.1" and peer["users"] == 943
