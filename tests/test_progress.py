"""genrec.progress: a tqdm bar on a terminal, plain periodic lines in a log file."""

import io

import numpy as np
import pytest
import torch
from tqdm.auto import tqdm

from genrec.evaluation import Evaluator
from genrec.progress import PlainProgress, announce, progress, quiet_library_bars


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def plain(stream, **options) -> PlainProgress:
    clock = FakeClock()
    bar = PlainProgress(stream=stream, clock=clock, **options)
    return bar, clock


def test_a_terminal_gets_a_tqdm_bar_and_a_file_gets_plain_lines():
    assert isinstance(progress(range(3), stream=Terminal()), tqdm)
    out = io.StringIO()  # isatty() is False, as for a redirected stderr
    bar = progress(range(3), desc="work", stream=out)
    assert isinstance(bar, PlainProgress)
    assert list(bar) == [0, 1, 2]
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    assert text.endswith("\n") and all(line.startswith("work: ") for line in text.splitlines())
    assert text.splitlines()[-1].startswith("work: 3/3 its (100%)")


def test_plain_lines_every_tenth_without_carriage_returns_or_escape_codes():
    out = io.StringIO()
    bar, clock = plain(out, total=1000, desc="train runs/x", unit="step")
    for step in range(1000):
        clock.now = (step + 1) / 100
        bar.update(1)
        bar.set_postfix(loss=f"{1 / (step + 1):.4f}", epoch=0)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 10  # 10%, 20%, ..., 100%; close() does not repeat the last one
    assert lines[0] == "train runs/x: 100/1000 steps (10%), 0:00:01 elapsed, 100 steps/s, loss=0.0101, epoch=0"
    assert lines[-1].startswith("train runs/x: 1000/1000 steps (100%), 0:00:10 elapsed")
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def test_plain_lines_at_least_every_interval():
    out = io.StringIO()
    bar, clock = plain(out, total=10_000, desc="slow", interval=30.0)
    for _ in range(5):
        clock.now += 29.0
        bar.update(1)  # 0.05% per update: only the clock prints
    assert len(out.getvalue().splitlines()) == 2  # at 58 s (>= 30 s after 0) and 116 s (>= 30 s after 58)
    bar.close()
    assert out.getvalue().splitlines()[-1].startswith("slow: 5/10000 its (0%), 0:02:25 elapsed")


def test_a_transient_loop_is_silent_when_short_and_visible_when_long():
    quick = io.StringIO()
    bar, clock = plain(quick, total=4, desc="evaluating valid", unit="user", leave=False)
    for _ in range(4):
        clock.now += 1.0
        bar.update(1)
    bar.close()
    assert quick.getvalue() == ""
    slow = io.StringIO()
    bar, clock = plain(slow, total=4, desc="evaluating test", unit="user", leave=False)
    for _ in range(4):
        clock.now += 20.0
        bar.update(1)
    bar.close()
    assert slow.getvalue().splitlines() == ["evaluating test: 2/4 users (50%), 0:00:40 elapsed, 0.05 users/s",
                                            "evaluating test: 4/4 users (100%), 0:01:20 elapsed, 0.05 users/s"]


def test_resumed_progress_counts_from_initial_and_unknown_totals_work():
    out = io.StringIO()
    bar, clock = plain(out, total=100, initial=50, desc="train")
    clock.now = 10.0
    bar.update(10)
    assert out.getvalue() == "train: 60/100 its (60%), 0:00:10 elapsed, 1 its/s\n"
    out = io.StringIO()
    bar, clock = plain(out, desc="stream")
    bar.update(7)
    bar.close()
    assert out.getvalue() == "stream: 7 its, 0:00:00 elapsed\n"


def test_disabled_progress_prints_nothing():
    out = io.StringIO()
    with progress(total=5, stream=out, disable=True) as bar:
        bar.update(5)
    assert out.getvalue() == ""


def test_announce_labels_a_step(capsys):
    announce("semantic IDs", "building runs/x/semantic_ids.json with config/rqvae/ml100k.gin")
    assert capsys.readouterr().err == \
        "genrec: semantic IDs: building runs/x/semantic_ids.json with config/rqvae/ml100k.gin\n"


def test_generative_evaluation_reports_progress_per_user_batch(capsys, monkeypatch):
    """evaluate_ranked calls the recommender once per ``generate_batch_size`` users and counts users,
    so a slow generative evaluation shows real progress instead of one batch of everything."""
    monkeypatch.setattr(PlainProgress, "__init__", _eager_init(PlainProgress.__init__))
    rng = np.random.default_rng(0)
    users = np.arange(10)
    eval_set = type("EvalSet", (), {"users": users, "histories": [rng.integers(1, 9, 3) for _ in users],
                                    "targets": rng.integers(1, 9, 10)})()
    calls = []

    def recommend(batch_users, histories):
        calls.append(len(batch_users))
        return torch.arange(1, 9).repeat(len(batch_users), 1)

    evaluator = Evaluator(eval_set, 8, ks=(1, 5), generate_batch_size=4, label="evaluating test")
    whole = Evaluator(eval_set, 8, ks=(1, 5))
    assert evaluator.evaluate_ranked(recommend) == whole.evaluate_ranked(recommend)
    assert calls == [4, 4, 2, 10]
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(",")[0] for line in lines[:3]] == ["evaluating test: 4/10 users (40%)",
                                                          "evaluating test: 8/10 users (80%)",
                                                          "evaluating test: 10/10 users (100%)"]


def _eager_init(init):
    """PlainProgress with a zero interval: every update prints (a test cannot wait 30 s)."""
    def patched(self, *args, **kwargs):
        init(self, *args, **{**kwargs, "interval": 0.0})
    return patched


def test_library_bars_are_turned_off_only_off_a_terminal(monkeypatch):
    from transformers.utils import logging

    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    logging.enable_progress_bar()
    quiet_library_bars(Terminal())
    assert logging.is_progress_bar_enabled()
    try:
        quiet_library_bars(io.StringIO())
        assert not logging.is_progress_bar_enabled()
    finally:
        logging.enable_progress_bar()


@pytest.mark.parametrize("unit, plural", [("batch", "batches"), ("step", "steps"), ("pass", "passes"), ("user", "users")])
def test_plain_lines_spell_plural_units(unit, plural):
    out = io.StringIO()
    bar, clock = plain(out, total=4, desc="x", unit=unit)
    clock.now = 2.0
    bar.update(4)
    assert out.getvalue() == f"x: 4/4 {plural} (100%), 0:00:02 elapsed, 2 {plural}/s\n"
