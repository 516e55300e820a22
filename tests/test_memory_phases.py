"""benchmarks/memory_phases.py: a child's resident memory, labelled by the phases it announces on stderr."""

import json
import subprocess
import sys

from scripts import REPO, load_script

phases = load_script("memory_phases", "benchmarks/memory_phases.py")

CHILD = """
import sys, time
print("genrec: demo: warming up", file=sys.stderr, flush=True)
time.sleep(0.5)
print("train runs/x: 1/2 steps (50%), 0:00:01 elapsed", file=sys.stderr, flush=True)
block = bytearray(300 * 1024 * 1024)
for i in range(0, len(block), 4096):
    block[i] = 1
time.sleep(0.6)
del block
print("evaluating valid: 1/1 users", file=sys.stderr, flush=True)
time.sleep(0.5)
print("done")
sys.exit(3)
"""


def test_labels_are_the_announced_phase_without_counts():
    assert phases.label("train runs/x: 120/1000 steps (12%), 0:00:31 elapsed") == "train runs/x"
    assert phases.label("evaluating test: 60/100 users (60%)") == "evaluating test"
    assert phases.label("genrec: semantic IDs: building runs/rqvae") == "genrec: semantic IDs"
    assert phases.label("  File \"x.py\", line 3") is None and phases.label("no colon here") is None
    assert phases.label("/venv/lib/trainer.py:235: FutureWarning: deprecated") is None


def test_a_command_that_cannot_start_is_one_clear_error():
    out = subprocess.run([sys.executable, str(REPO / "benchmarks/memory_phases.py"), "--", "no-such-program-x"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "cannot start 'no-such-program-x'" in out.stderr and "Traceback" not in out.stderr


def test_a_child_that_allocates_shows_it_in_the_phase_it_announced(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "benchmarks/memory_phases.py"), "--every", "0.02",
                          "--log", str(tmp_path / "log.txt"), "--", sys.executable, "-c", CHILD],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 3  # the child's exit status is passed on
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert [p for p in result["phases"] if p != "start"] == ["genrec: demo", "train runs/x", "evaluating valid"]
    train, valid = result["phases"]["train runs/x"], result["phases"]["evaluating valid"]
    assert train["rss_mib"] - valid["rss_mib"] > 250  # the 300 MiB block lived in that phase only
    assert result["max_rss_mib"] >= train["rss_mib"] and result["returncode"] == 3
    assert "done" in (tmp_path / "log.txt").read_text() and "evaluating valid" in (tmp_path / "log.txt").read_text()
