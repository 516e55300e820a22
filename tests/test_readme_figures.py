"""benchmarks/readme_figures.py: every anchor is found in the current README, and the comparison logic.

No training: the figures' runs are the script's job; here the README parsing and the rounding rule
are checked on the real README and on small hand-written ones.
"""

import json
import sys
from pathlib import Path

import pytest

from scripts import load_script  # tests/scripts.py

REPO = Path(__file__).resolve().parents[1]


rf = load_script("readme_figures", "benchmarks/readme_figures.py")
README_TEXT = (REPO / "README.md").read_text(encoding="utf-8")

TOY = """# toy

Intro: test NDCG@10 0.0562 after training.

```python
# not a heading
```

## Results

| model | test NDCG@10 | valid NDCG@10 |
| --- | --- | --- |
| a | **0.0449** | 0.0617 (seed) |
| b | 3,237 s | n/a |

## Other

| model | test NDCG@10 |
| --- | --- |
| a | 0.0100 |
"""


def test_every_check_resolves_in_the_current_readme():
    checks = rf.load_checks()
    assert {"sasrec_debug", "nrms_debug", "lcrec_quickstart"} <= {check["id"] for check in checks}
    found = rf.resolve(checks, README_TEXT)
    for check, figures in zip(checks, found):
        assert check["command"] in README_TEXT
        for figure, places in zip(check["figures"], figures):
            assert len(places) == len(figure["anchors"]) >= 1
            for place in places:
                float(place["value"].replace(",", ""))  # parses as a number
                assert place["line"] >= 1 and place["where"].startswith(f"README.md line {place['line']} (")
            # every place that states one figure states the same number
            assert len({place["value"] for place in places}) == 1, (check["id"], figure["metric"], places)


def test_sasrec_debug_figure_is_read_from_the_readme():
    checks = {check["id"]: check for check in rf.load_checks()}
    [figures] = rf.resolve([checks["sasrec_debug"]], README_TEXT)
    test_places = figures[0]
    assert [p["value"] for p in test_places] == ["0.0562"] * len(test_places)
    # the line named holds the number
    for place in test_places:
        assert "0.0562" in README_TEXT.splitlines()[place["line"] - 1]


def test_edited_readme_is_what_gets_checked():
    checks = {check["id"]: check for check in rf.load_checks()}
    edited = README_TEXT.replace("test NDCG@10 0.0562; see [Results]", "test NDCG@10 0.0571; see [Results]")
    assert edited != README_TEXT
    [figures] = rf.resolve([checks["sasrec_debug"]], edited)
    assert [p["value"] for p in figures[0]][0] == "0.0571"


def test_missing_anchor_and_missing_command_fail_clearly():
    checks = {check["id"]: check for check in rf.load_checks()}
    gone = README_TEXT.replace("printing the metrics: test NDCG@10", "printing the metrics: NDCG")
    with pytest.raises(rf.ReadmeError, match="lcrec_quickstart.*matched 0 times"):
        rf.resolve([checks["lcrec_quickstart"]], gone)
    no_command = README_TEXT.replace("config/content/ml100k/nrms_debug.gin", "config/content/ml100k/nrms_small.gin")
    with pytest.raises(rf.ReadmeError, match="no longer contains the command of check 'nrms_debug'"):
        rf.resolve([checks["nrms_debug"]], no_command)


def test_anchors_on_a_hand_written_readme():
    assert rf.find_figure(TOY, {"regex": r"Intro: test NDCG@10 ([0-9.]+)"})["value"] == "0.0562"
    cell = rf.find_figure(TOY, {"table_row": "a", "column": "test NDCG@10", "section": "## Results"})
    assert cell["value"] == "0.0449" and cell["line"] == 13 and "## Results" in cell["where"]
    valid = rf.find_figure(TOY, {"table_row": "a", "column": "valid NDCG@10", "section": "## Results"})
    assert valid["value"] == "0.0617"
    third = rf.find_figure(TOY, {"table_row": "b", "column": "test NDCG@10", "section": "## Results"})
    assert third["value"] == "3,237"
    assert rf.find_figure(TOY, {"table_row": "a", "column": "test NDCG@10", "section": "## Other"})["value"] == "0.0100"
    with pytest.raises(rf.ReadmeError, match="found 2 times"):  # row 'a' is in two tables
        rf.find_figure(TOY, {"table_row": "a", "column": "test NDCG@10"})
    with pytest.raises(rf.ReadmeError, match="not in the table's header"):
        rf.find_figure(TOY, {"table_row": "a", "column": "MRR@10", "section": "## Results"})
    with pytest.raises(rf.ReadmeError, match="does not start with a number"):
        rf.find_figure(TOY, {"table_row": "b", "column": "valid NDCG@10", "section": "## Results"})
    with pytest.raises(rf.ReadmeError, match="heading '# not a heading' found 0 times"):
        rf.find_figure(TOY, {"table_row": "a", "column": "test NDCG@10", "section": "# not a heading"})


def test_rounding_to_the_readmes_digits():
    assert rf.rounded_as(0.05620875429162153, "0.0562") == "0.0562"
    assert rf.agrees(0.05620875429162153, "0.0562")
    assert rf.agrees(0.06475019149633879, "0.0648")  # half-up at the 5th decimal
    assert not rf.agrees(0.06474999, "0.0648")
    assert not rf.agrees(0.0571, "0.0562")  # a mismatch fails
    assert not rf.agrees(0.05625, "0.0562")  # 0.05625 rounds up to 0.0563
    assert rf.agrees(0.13997879109225875, "0.1400")  # trailing zeros are digits
    assert not rf.agrees(0.1349, "0.1400")
    assert rf.agrees(1.0, "1.0") and rf.agrees(0.0, "0.0") and not rf.agrees(0.06, "0.0")
    assert rf.agrees(3237.4, "3,237") and not rf.agrees(3237.6, "3,237")
    assert not rf.agrees(None, "0.0562")


def test_judge_on_fabricated_metrics():
    check = {"id": "x", "command": "python x.py", "figures": [
        {"metric": "test.ndcg@10", "anchors": [{}, {}]}, {"metric": "valid.ndcg@10", "anchors": [{}]},
        {"metric": "test.absent", "anchors": [{}]}]}
    stated = [[{"value": "0.0562"}, {"value": "0.0562"}], [{"value": "0.0648"}], [{"value": "1.0"}]]
    metrics = {"test": {"ndcg@10": 0.05620875}, "valid": {"ndcg@10": 0.0651}}
    figures = rf.judge(check, stated, metrics)
    assert [f["pass"] for f in figures] == [True, False, False]
    assert figures[0]["measured_rounded"] == ["0.0562"] and figures[1]["measured_rounded"] == ["0.0651"]
    assert figures[2]["measured"] is None
    # two README places disagreeing: the figure fails even though one of them matches
    [split] = rf.judge(check | {"figures": check["figures"][:1]}, [[{"value": "0.0562"}, {"value": "0.0563"}]], metrics)
    assert not split["pass"] and split["measured_rounded"] == ["0.0562"]


def test_command_line_adds_run_dir_and_threads_unless_set(tmp_path):
    args = rf.command_line("python genrec/trainers/sasrec_trainer.py config/sasrec/ml100k_debug.gin", tmp_path / "r", 1)
    assert args[0] == sys.executable and args[-4:] == ["--run-dir", str(tmp_path / "r"), "--threads", "1"]
    args = rf.command_line("python genrec/trainers/hstu_trainer.py config/hstu/ml100k.gin --threads 1", tmp_path, 3)
    assert args.count("--threads") == 1


def test_list_and_unknown_ids(capsys, tmp_path):
    assert rf.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "sasrec_debug: python genrec/trainers/sasrec_trainer.py config/sasrec/ml100k_debug.gin" in out
    assert "lcrec_quickstart (slow)" in out
    assert rf.main(["--only", "nope"]) == 2
    assert "unknown check(s) ['nope']" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "old").write_text("x")
    assert rf.main(["--only", "sasrec_debug", "--work-dir", str(busy)]) == 2
    assert "is not empty" in capsys.readouterr().err


def test_bad_check_file_is_refused(tmp_path):
    bad = tmp_path / "checks.json"
    bad.write_text(json.dumps({"checks": [{"id": "a", "command": "python a.py", "figures": [
        {"metric": "test.ndcg@10", "anchors": [{"regex": "no group ([0-9]+) ([0-9]+)"}]}]}]}))
    with pytest.raises(rf.ReadmeError, match="exactly one capture group"):
        rf.load_checks(bad)


FAKE_TRAINER = ("python -c \"import json, os, sys; d = sys.argv[sys.argv.index('--run-dir') + 1]; os.makedirs(d); "
                "json.dump({'test': {'ndcg@10': 0.05621}, 'torch_threads': int(sys.argv[-1])}, "
                "open(os.path.join(d, 'metrics.json'), 'w'))\"")


@pytest.mark.parametrize("stated, code", [("0.0562", 0), ("0.0563", 1)])
def test_end_to_end_with_a_fake_trainer(tmp_path, capsys, stated, code):
    """The whole script on a stand-in command that writes a metrics.json: pass, and a mismatch exits 1."""
    readme = tmp_path / "README.md"
    readme.write_text(f"# r\n\nRun `{FAKE_TRAINER}`: test NDCG@10 {stated}.\n")
    checks = tmp_path / "checks.json"
    checks.write_text(json.dumps({"checks": [{"id": "fake", "command": FAKE_TRAINER, "figures": [
        {"metric": "test.ndcg@10", "anchors": [{"regex": r"test NDCG@10 ([0-9.]+)\."}]}]}]}))
    work = tmp_path / "work"
    argv = ["--readme", str(readme), "--checks", str(checks), "--work-dir", str(work), "--threads", "2"]
    assert rf.main(argv) == code
    result = json.loads(capsys.readouterr().out)
    [check] = result["checks"]
    assert check["figures"][0]["readme"][0]["value"] == stated and check["figures"][0]["measured"] == 0.05621
    assert check["pass"] is (code == 0) and result["failed"] == ([] if code == 0 else ["fake"])
    assert check["torch_threads"] == 2 and check["load_average_before"] is not None
    assert not work.exists()  # run folders are deleted without --keep
