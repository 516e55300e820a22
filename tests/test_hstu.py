"""HSTU: model unit checks (causality, padding, contract, save/load, bad settings), a short real run on
ml-100k, resume after kill -9."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from genrec.models import MostPopular
from genrec.models.hstu import HSTU, position_buckets
from interrupt import kill_at_first_checkpoint  # tests/interrupt.py

REPO = Path(__file__).resolve().parents[1]
TRAINER = [sys.executable, "genrec/trainers/hstu_trainer.py", "config/hstu/ml100k_debug.gin"]
# A tiny real budget: 40 optimizer steps of 64 windows, validation every 10 steps.
SHORT = ["--gin", "fit.max_steps = 40", "--gin", "fit.batch_size = 64", "--gin", "fit.eval_every_steps = 10",
         "--gin", "fit.eval_every_epochs = 1000"]
ITEMS = ["[PAD]", "a", "b", "c", "d", "e", "f"]


def test_a_later_item_never_changes_an_earlier_position():
    torch.manual_seed(0)
    model = HSTU(num_items=20, max_history=8, num_position_buckets=4).eval()
    x = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8]])
    h = model.encode(x)
    for t in range(2, 8):
        changed = x.clone()
        changed[0, t:] = torch.tensor([19] * (8 - t))
        assert torch.equal(model.encode(changed)[0, :t], h[0, :t]), t
        assert not torch.allclose(model.encode(changed)[0, t], h[0, t])
    # and the loss gradient of an early position never reaches a later input
    model.train()
    emb = model.item_emb
    emb.weight.grad = None
    hidden, _ = model(x)
    (hidden[0, 3] * torch.randn(hidden.shape[-1])).sum().backward()  # (a plain sum of a LayerNorm output is 0)
    assert emb.weight.grad[[5, 6, 7, 8]].abs().sum() == 0 and emb.weight.grad[[3, 4]].abs().sum() > 0


def test_scores_do_not_depend_on_padding():
    torch.manual_seed(0)
    model = HSTU(num_items=20, max_history=6).eval()
    s1 = model.score([np.array([3, 4])])
    for pad in (1, 4):
        s2 = model.logits(model.encode(torch.tensor([[0] * pad + [3, 4]]))[:, -1])
        assert torch.allclose(s1[:, 1:], s2[:, 1:], atol=1e-5)
    assert torch.isinf(s1[0, 0])
    long = np.arange(1, 15)  # longer than max_history: the last 6 items are used
    assert torch.allclose(model.score([long])[:, 1:], model.score([long[-6:]])[:, 1:], atol=1e-6)


def test_position_buckets_are_exact_then_logarithmic():
    d = torch.arange(0, 60)
    b = position_buckets(d, num_buckets=8, max_distance=50)
    assert b[:4].tolist() == [0, 1, 2, 3]  # exact below num_buckets // 2
    assert (b.diff() >= 0).all() and b.max() == 7 and b[49:].eq(7).all()
    assert position_buckets(torch.tensor([-3, 0, 9]), 32, 50).tolist() == [0, 0, 9]
    assert position_buckets(torch.arange(5), 2, 50).tolist() == [0, 1, 1, 1, 1]


def test_loss_is_full_softmax_cross_entropy():
    torch.manual_seed(0)
    model = HSTU(num_items=5, max_history=4, dropout=0.0, attn_dropout=0.0)
    x, y = torch.tensor([[0, 1, 2, 3]]), torch.tensor([[-100, 2, 3, 4]])
    hidden, loss = model(x, y)
    logits = hidden[0, 1:] @ model.item_emb.weight[1:].T  # every item but the padding one
    expected = torch.nn.functional.cross_entropy(logits, y[0, 1:] - 1)
    assert torch.allclose(loss, expected, atol=1e-6)
    loss.backward()
    assert all(p.grad is not None for name, p in model.named_parameters() if not name.startswith("pos_emb"))


def test_follows_the_recommender_contract():
    torch.manual_seed(0)
    model = HSTU(num_items=6, max_history=4).eval()
    model.set_item_ids(ITEMS)
    scores = model.score([np.array([1, 2]), np.array([3])], users=np.array([0, 1]))
    assert scores.dtype == torch.float32 and scores.shape == (2, 7) and torch.isinf(scores[:, 0]).all()
    items, top = model.recommend_indices([np.array([1, 2])], k=3)
    assert torch.allclose(top, scores[:1, 1:].topk(3).values, atol=1e-5) and (items > 0).all()
    lists = model.recommend([["a", "b"]], k=3)
    assert [item for item, _ in lists[0]] == [model.item_ids[i] for i in items[0].tolist()]
    with pytest.raises(ValueError, match="unknown item id 'zz'"):
        model.recommend([["zz"]])
    with pytest.raises(ValueError, match="empty history"):
        model.score([np.array([], dtype=np.int64)])


@pytest.mark.parametrize("settings, message", [
    ({"hidden_size": 63, "num_heads": 2}, "divisible by HSTU.num_heads"),
    ({"num_layers": 0}, r"HSTU.num_layers = 0 cannot work"),
    ({"max_history": 2.5}, r"HSTU.max_history = 2.5 cannot work"),
    ({"num_heads": True}, r"HSTU.num_heads = True cannot work"),
    ({"num_position_buckets": 1}, r"HSTU.num_position_buckets = 1 cannot work; it must be an int >= 2"),
    ({"qk_dim": 0, "v_dim": 8}, r"HSTU.qk_dim = 0 cannot work"),
    ({"dropout": 1.0}, r"HSTU.dropout = 1.0 cannot work; it must be a number in \[0, 1\)"),
    ({"attn_dropout": -0.1}, r"HSTU.attn_dropout = -0.1 cannot work"),
])
def test_bad_settings_are_clear_errors(settings, message):
    with pytest.raises(ValueError, match=message):
        HSTU(num_items=5, **settings)


def test_explicit_head_widths_need_no_divisible_hidden_size():
    model = HSTU(num_items=5, hidden_size=10, num_heads=3, qk_dim=4, v_dim=6).eval()
    assert model.score([np.array([1, 2])]).shape == (1, 6)
    with pytest.raises(ValueError, match="more than its max_history"):
        HSTU(num_items=5, max_history=3).encode(torch.ones(1, 4, dtype=torch.long))


def test_save_and_load_round_trip_gives_identical_scores(tmp_path):
    torch.manual_seed(0)
    model = HSTU(num_items=6, max_history=4, hidden_size=8, num_heads=2, num_position_buckets=4).eval()
    with pytest.raises(ValueError, match="set_item_ids"):
        model.save_pretrained(tmp_path / "model")
    model.set_item_ids(ITEMS)
    model.save_pretrained(tmp_path / "model")
    loaded = HSTU.from_pretrained(tmp_path / "model")
    assert not loaded.training and loaded.settings == model.settings and loaded.item_ids == model.item_ids
    histories = [np.array([1, 2]), np.array([6, 5, 4, 3, 2, 1])]
    assert torch.equal(loaded.score(histories), model.score(histories))
    assert loaded.recommend([["a", "b"]], k=3) == model.recommend([["a", "b"]], k=3)
    with pytest.raises(FileNotFoundError, match="not a saved HSTU"):
        HSTU.from_pretrained(tmp_path / "nothing")
    path = tmp_path / "model" / "hstu.safetensors"
    data = bytearray(path.read_bytes())
    data[-4:] = bytes(b ^ 0xFF for b in data[-4:])  # flip the bytes of the last weight
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        HSTU.from_pretrained(tmp_path / "model")


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

    from genrec.config import parse_gin
    from genrec.training import experiment

    parse_gin([], ["experiment.dataset = 'ml-100k'"])
    exp = experiment()
    pop = MostPopular(exp.split.train, exp.num_items)
    pop_test = exp.evaluators["test"](lambda users, histories: pop.score(histories))
    assert metrics["test"]["ndcg@10"] > pop_test["ndcg@10"], (metrics["test"], pop_test)
    served = HSTU.from_pretrained(tmp_path / "run" / "model")  # the best weights, as evaluated on test
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
