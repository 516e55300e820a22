"""SASRec: model unit checks, a short real run on ml-100k, resume after kill -9, 2-process DDP."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from genrec.models import MostPopular, SASRec
from genrec.training.checkpoint import load_tensors
from interrupt import kill_at_first_checkpoint  # tests/interrupt.py

REPO = Path(__file__).resolve().parents[1]
TRAINER = [sys.executable, "genrec/trainers/sasrec_trainer.py", "config/sasrec/ml100k_debug.gin"]
# A tiny real budget: 40 optimizer steps of 64 windows, validation every 10 steps.
SHORT = ["--gin", "fit.max_steps = 40", "--gin", "fit.batch_size = 64", "--gin", "fit.eval_every_steps = 10",
         "--gin", "fit.eval_every_epochs = 1000"]


def test_causal_and_padding_invariance():
    torch.manual_seed(0)
    model = SASRec(num_items=20, max_history=6).eval()
    x = torch.tensor([[0, 0, 3, 4, 5, 6]])
    h = model.encode(x)
    changed = x.clone()
    changed[0, -1] = 7  # a later item must not change earlier positions
    assert torch.allclose(model.encode(changed)[0, :-1], h[0, :-1], atol=1e-6)
    # the score of a short history does not depend on how much left padding it gets
    s1 = model.score([np.array([3, 4])])
    s2 = model.logits(model.encode(torch.tensor([[0, 3, 4]]))[:, -1])
    assert torch.allclose(s1, s2, atol=1e-5) and torch.isinf(s1[0, 0])


def test_losses_and_errors():
    torch.manual_seed(0)
    x = torch.tensor([[0, 1, 2, 3]])
    y = torch.tensor([[-100, 2, 3, 4]])
    for loss in ("ce", "bpr"):
        _, value = SASRec(num_items=5, max_history=4, loss=loss)(x, y)
        assert value.ndim == 0 and torch.isfinite(value)
    with pytest.raises(ValueError, match="loss"):
        SASRec(num_items=5, loss="bce")
    with pytest.raises(ValueError, match="empty history"):
        SASRec(num_items=5).score([np.array([], dtype=np.int64)])


def test_recbole_switches_positions_and_padding_in_the_softmax():
    torch.manual_seed(0)
    oldest = SASRec(num_items=20, max_history=6, positions="oldest_first").eval()
    latest = SASRec(num_items=20, max_history=6).eval()
    latest.load_state_dict(oldest.state_dict())
    # oldest-first numbering: the state after [3, 4] is the state at position 1 of [3, 4, 5, ...]
    short, long = torch.tensor([[0, 0, 0, 0, 3, 4]]), torch.tensor([[0, 0, 3, 4, 5, 6]])
    assert torch.allclose(oldest.encode(short)[0, -1], oldest.encode(long)[0, 3], atol=1e-6)
    assert not torch.allclose(latest.encode(short)[0, -1], latest.encode(long)[0, 3], atol=1e-3)
    # the padding item in the softmax: one more logit, its row's score (initialised and trained as RecBole does)
    x, y = torch.tensor([[0, 1, 2, 3]]), torch.tensor([[-100, 2, 3, 4]])
    plain = SASRec(num_items=5, max_history=4).eval()
    padded = SASRec(num_items=5, max_history=4, softmax_padding=True).eval()
    padded.load_state_dict(plain.state_dict())
    hidden, without = plain(x, y)
    _, with_padding = padded(x, y)
    logits = plain.logits(hidden[0, 1:])
    logits[:, 0] = hidden[0, 1:] @ plain.item_emb.weight[0]
    assert torch.isclose(with_padding, torch.nn.functional.cross_entropy(logits, y[0, 1:]), atol=1e-6)
    assert with_padding > without
    with pytest.raises(ValueError, match="SASRec.positions"):
        SASRec(num_items=5, positions="right")


def test_future_targets_train_each_position_on_the_next_k_items():
    torch.manual_seed(0)
    # a window whose earliest label was trained by the previous window (-100), left padding, 9 ends it
    x, y = torch.tensor([[0, 2, 3, 4, 5, 6]]), torch.tensor([[-100, -100, 4, 5, 6, 9]])
    one = SASRec(num_items=10, max_history=6).eval()
    three = SASRec(num_items=10, max_history=6, future_targets=3).eval()
    three.load_state_dict(one.state_dict())
    hidden, next_only = one(x, y)
    _, future = three(x, y)
    assert torch.equal(three.future_items(x, y)[0, 2:], torch.tensor([[4, 5, 6], [5, 6, 9], [6, 9, 0], [9, 0, 0]]))
    log_probs = one.logits(hidden[0]).log_softmax(-1)
    pairs = {2: [4, 5, 6], 3: [5, 6, 9], 4: [6, 9], 5: [9]}  # position -> the items after it in the window
    expected = -torch.stack([log_probs[t, item] for t, items in pairs.items() for item in items]).mean()
    assert torch.isclose(future, expected, atol=1e-6)
    assert torch.isclose(next_only, -torch.stack([log_probs[t, items[0]] for t, items in pairs.items()]).mean(), atol=1e-6)
    future.backward()
    assert all(torch.isfinite(p.grad).all() for p in three.parameters() if p.grad is not None)
    with pytest.raises(ValueError, match="future_targets = 2 needs SASRec.loss = 'ce'"):
        SASRec(num_items=5, loss="bpr", future_targets=2)
    with pytest.raises(ValueError, match="SASRec.future_targets = 0"):
        SASRec(num_items=5, future_targets=0)


def test_follows_the_recommender_contract():
    torch.manual_seed(0)
    model = SASRec(num_items=6, max_history=4).eval()
    model.set_item_ids(["[PAD]", "a", "b", "c", "d", "e", "f"])
    scores = model.score([np.array([1, 2]), np.array([3])], users=np.array([0, 1]))
    assert scores.dtype == torch.float32 and scores.shape == (2, 7) and torch.isinf(scores[:, 0]).all()
    items, top = model.recommend_indices([np.array([1, 2])], k=3)
    assert torch.allclose(top, scores[:1, 1:].topk(3).values, atol=1e-5) and (items > 0).all()
    lists = model.recommend([["a", "b"]], k=3)
    assert [item for item, _ in lists[0]] == [model.item_ids[i] for i in items[0].tolist()]
    with pytest.raises(ValueError, match="unknown item id 'zz'"):
        model.recommend([["zz"]])
    pop = MostPopular([np.array([1, 2, 2]), np.array([2, 3])], num_items=6)
    pop_scores = pop.score([np.array([1]), np.array([4])])
    assert pop_scores.dtype == torch.float32 and pop_scores[0, 2] == 3 and torch.isinf(pop_scores[:, 0]).all()
    assert pop.recommend_indices([np.array([1])], k=2)[0].tolist() == [[2, 1]]


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = SASRec(num_items=6, max_history=4, hidden_size=8, num_heads=2, inner_size=16).eval()
    with pytest.raises(ValueError, match="set_item_ids"):
        model.save_pretrained(tmp_path / "model")
    model.set_item_ids(["[PAD]", "a", "b", "c", "d", "e", "f"])
    model.save_pretrained(tmp_path / "model")
    loaded = SASRec.from_pretrained(tmp_path / "model")
    assert not loaded.training and loaded.settings == model.settings and loaded.item_ids == model.item_ids
    assert loaded.recommend([["a", "b"]], k=3) == model.recommend([["a", "b"]], k=3)
    with pytest.raises(FileNotFoundError, match="not a saved SASRec"):
        SASRec.from_pretrained(tmp_path / "nothing")


def _run(run_dir, extra=(), **popen):
    return subprocess.Popen(TRAINER + SHORT + ["--run-dir", str(run_dir), *extra], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def _metrics(run_dir):
    return json.loads((Path(run_dir) / "metrics.json").read_text())


@pytest.mark.slow
def test_short_real_run_beats_most_popular(tmp_path):
    proc = _run(tmp_path / "run")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    metrics = _metrics(tmp_path / "run")
    assert metrics["dataset"] == "ml-100k" and metrics["protocol"] == "full" and metrics["steps"] == 40
    assert set(metrics["test"]) >= {"ndcg@10", "recall@10", "mrr@10", "recall@20"}

    from genrec.training import experiment
    from genrec.config import parse_gin

    parse_gin([], ["experiment.dataset = 'ml-100k'"])
    exp = experiment()
    pop = MostPopular(exp.split.train, exp.num_items)
    pop_test = exp.evaluators["test"](lambda users, histories: pop.score(histories))
    assert metrics["test"]["ndcg@10"] > pop_test["ndcg@10"], (metrics["test"], pop_test)
    served = SASRec.from_pretrained(tmp_path / "run" / "model")  # the best weights, as evaluated on test
    served_test = exp.evaluators["test"](lambda users, histories: served.score(histories))
    assert served_test["ndcg@10"] == pytest.approx(metrics["test"]["ndcg@10"], abs=1e-6)


@pytest.mark.slow
def test_resume_after_kill_reaches_same_metrics(tmp_path):
    full = _run(tmp_path / "full")
    out, _ = full.communicate(timeout=600)
    assert full.returncode == 0, out

    kill_at_first_checkpoint(_run(tmp_path / "cut"), tmp_path / "cut")

    resumed = _run(tmp_path / "cut")
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    assert "resuming" in out
    a, b = _metrics(tmp_path / "full"), _metrics(tmp_path / "cut")
    assert a["valid"] == b["valid"] and a["test"] == b["test"] and a["steps"] == b["steps"]


@pytest.mark.slow
def test_two_process_ddp_keeps_ranks_identical(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "tests/ddp_worker.py", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rank0, meta0 = load_tensors(tmp_path / "rank0.safetensors")
    rank1, meta1 = load_tensors(tmp_path / "rank1.safetensors")
    initial, _ = load_tensors(tmp_path / "initial.safetensors")
    assert meta0["world"] == meta1["world"] == 2
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    assert not torch.equal(rank0["item_emb.weight"], initial["item_emb.weight"])  # it did train
    assert _metrics(tmp_path / "run")["num_processes"] == 2
