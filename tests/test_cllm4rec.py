"""CLLM4Rec-style soft tokens: windows, gradients, losses, architectures, serving, save/load, the trainer.

Tiny randomly initialised LLMs (llama = SmolLM2's architecture, gpt2, qwen2) with SmolLM2's real
tokenizer stand in for the backbone, so every test runs the real HF models, peft and faiss in seconds.
"""

import json
import subprocess
import sys
from pathlib import Path

import gin
import numpy as np
import pytest
import torch

from genrec.data import load_dataset
from genrec.data.windows import SequenceWindows
from genrec.llm import tiny_causal_lm
from genrec.llm.lora import lora_settings
from genrec.models.cllm4rec import CLLM4Rec
from genrec.training import experiment, fit

REPO = Path(__file__).resolve().parents[1]


class _TinyLLMs(dict):
    """Folders of tiny random LLMs by architecture, each written on first use."""

    def __init__(self, root: Path):
        super().__init__()
        self.root = root

    def __missing__(self, arch: str) -> str:
        self[arch] = str(tiny_causal_lm(self.root / arch, arch, seed=1))
        return self[arch]


@pytest.fixture(scope="session")
def tiny_llms(tmp_path_factory):
    return _TinyLLMs(tmp_path_factory.mktemp("cllm4rec-llms"))


@pytest.fixture(scope="session")
def ml100k():
    interactions, _ = load_dataset("ml-100k")
    return interactions


def build(path, num_users=6, num_items=40, seed=0, **kwargs):
    torch.manual_seed(seed)
    kwargs = {"d_rec": 16, "max_history": 8, "user_dropout": 0.0, **kwargs}
    if kwargs.get("tuning") == "lora":  # r 8 on every linear layer (any architecture), alpha 16
        kwargs.setdefault("lora", lora_settings(alpha=16, target_modules="all-linear"))
    return CLLM4Rec(num_users=num_users, num_items=num_items, pretrained_path=path, **kwargs)


SEQUENCES = [np.arange(1, 15), np.array([3, 4, 5]), np.array([7]), np.arange(20, 31), np.array([2, 9, 8, 2]),
             np.array([40, 39])]


def windows(sequences, max_history):
    return SequenceWindows(sequences, max_history, with_user=True)


def batch_of(windows):
    return {k: torch.stack([windows[i][k] for i in range(len(windows))]) for k in ("users", "items", "labels")}


@pytest.fixture(scope="session")
def served(tiny_llms):
    """A frozen-backbone model with raw ids and stored histories."""
    model = build(tiny_llms["llama"]).eval()
    model.set_ids([f"u{u}" for u in range(6)], ["[PAD]"] + [f"i{i}" for i in range(1, 41)])
    model.set_histories(SEQUENCES)
    return model


# --- data --------------------------------------------------------------------------------------


# --- training signal ---------------------------------------------------------------------------


def test_frozen_llm_gets_no_gradient_but_tables_and_projections_do(tiny_llms):
    model = build(tiny_llms["llama"], bpr_context_weight=1.0, bpr_user_weight=1.0)
    _, loss = model(**batch_of(windows(SEQUENCES, 8)))
    loss.backward()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"user_emb.weight", "item_emb.weight", "in_proj.weight", "in_proj.bias", "out_proj.weight",
                         "out_proj.bias"}
    for name in trainable:
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert all(p.grad is None for p in model.llm.parameters())


@pytest.mark.parametrize("tuning", ["lora", "full"])
def test_lora_and_full_tuning_train_the_llm_but_never_its_word_embeddings(tiny_llms, tuning):
    model = build(tiny_llms["llama"], tuning=tuning)
    _, loss = model(**batch_of(windows(SEQUENCES, 8)))
    loss.backward()
    llm = {name: p for name, p in model.llm.named_parameters() if p.requires_grad}
    assert llm and all(p.grad is not None for p in llm.values())
    assert not model.llm.get_input_embeddings().weight.requires_grad
    if tuning == "lora":
        assert all("lora_" in name for name in llm)


@pytest.mark.parametrize("arch", ["gpt2", "qwen2"])
def test_other_architectures_train_and_score(tiny_llms, arch):
    model = build(tiny_llms[arch], tuning="lora")
    _, loss = model(**batch_of(windows(SEQUENCES, 8)))
    loss.backward()
    assert torch.isfinite(loss) and model.in_proj.weight.grad.abs().sum() > 0
    scores = model.eval().score([np.array([1, 2]), np.array([], dtype=np.int64)], np.array([0, 3]))
    assert scores.shape == (2, 41) and torch.isinf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()


def test_each_bpr_part_adds_its_weighted_term(tiny_llms):
    model = build(tiny_llms["llama"], l2_weight=0.0).eval()  # eval: no dropout, same forward every call
    batch = batch_of(windows(SEQUENCES, 8))

    def loss_with(**weights):
        model.settings.update({"bpr_context_weight": 0.0, "bpr_user_weight": 0.0, **weights})
        torch.manual_seed(5)  # the same negatives in every call
        return float(model(**batch)[1])

    ce = loss_with()
    context, context2 = loss_with(bpr_context_weight=1.0), loss_with(bpr_context_weight=2.0)
    user, user2 = loss_with(bpr_user_weight=1.0), loss_with(bpr_user_weight=2.0)
    both = loss_with(bpr_context_weight=1.0, bpr_user_weight=1.0)
    assert context > ce and user > ce  # each part is a positive BPR term (about log 2 at initialisation)
    assert context2 - ce == pytest.approx(2 * (context - ce), rel=1e-4)
    assert user2 - ce == pytest.approx(2 * (user - ce), rel=1e-4)
    assert both - ce == pytest.approx((context - ce) + (user - ce), rel=1e-4)  # the two parts are summed
    # each part equals its formula: -log sigmoid(<q, e_pos> - <q, e_neg>) averaged over positions and negatives
    with torch.no_grad():
        states, _ = model(batch["users"], batch["items"])
        keep = batch["labels"] != -100
        target = batch["labels"][keep]
        torch.manual_seed(5)
        negatives = (target[:, None] - 1 + torch.randint(1, 40, (len(target), 30))) % 40 + 1
        assert (negatives != target[:, None]).all() and negatives.min() >= 1 and negatives.max() <= 40
        items = model.item_emb.weight

        def bpr(query):
            margin = (query * items[target]).sum(-1, keepdim=True) - (query[:, None] * items[negatives]).sum(-1)
            return float(-torch.nn.functional.logsigmoid(margin).mean())

        users = model.user_emb.weight[(batch["users"] + 1)[:, None].expand_as(keep)[keep]]
    assert context - ce == pytest.approx(bpr(states[keep]), rel=1e-4)
    assert user - ce == pytest.approx(bpr(users), rel=1e-4)
    model.settings["l2_weight"] = 1e-3
    l2 = 1e-3 * float(model.user_emb.weight.square().sum() + model.item_emb.weight.square().sum())
    assert loss_with() == pytest.approx(ce + l2, rel=1e-5)


def test_loss_falls_on_a_tiny_real_subset(tiny_llms, ml100k, tmp_path):
    """The shared loop on 60 real ml-100k users: the logged training loss falls."""
    sequences = ml100k.sequences[:60]
    num_items = int(max(s.max() for s in sequences))
    gin.clear_config()
    model = build(tiny_llms["llama"], num_users=60, num_items=num_items, d_rec=32, max_history=16)
    training = windows(sequences, 16)

    def evaluate(model, which, accelerator):
        return {"ndcg@10": 0.0}

    fit(model, training, evaluate, run_dir=tmp_path, info={}, seed=0, max_epochs=1000, max_steps=60, batch_size=16,
        learning_rate=3e-3, log_every_steps=10, patience=None, eval_every_epochs=1000)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "log.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.5, losses


def test_random_scores_give_chance_level_sampled_hit_rate():
    """Metric sanity on the real protocol: 1 target among 101 candidates, random scores -> Hit@10 ~ 10/101."""
    gin.clear_config()
    exp = experiment(extra_protocols=["sampled"])
    generator = torch.Generator().manual_seed(0)
    evaluate = exp.evaluate_scores(lambda m, users, histories: torch.rand(len(users), exp.num_items + 1,
                                                                          generator=generator))
    metrics = evaluate(None, "test", None)
    sampled = metrics["sampled"]
    assert len(exp.evaluators["test"]) == 943
    # 943 users: the standard error of a rate near 0.1 is ~0.01
    assert abs(sampled["hit@10"] - 10 / 101) < 0.03 and abs(sampled["hit@1"] - 1 / 101) < 0.01
    assert abs(sampled["hit@20"] - 20 / 101) < 0.04
    assert metrics["recall@10"] < 0.03  # full ranking: 10 / 1682 expected
    with pytest.raises(ValueError, match="extra_protocols"):
        experiment(extra_protocols=["full"])


# --- serving -----------------------------------------------------------------------------------


def test_recommend_uses_faiss_top_k_of_the_scores_and_skips_the_history(served):
    top, scores = served.recommend_indices([SEQUENCES[0]], k=5, users=np.array([0]))
    expected = served.score([SEQUENCES[0]], np.array([0]))[0]
    expected[torch.as_tensor(SEQUENCES[0])] = float("-inf")
    assert top[0].tolist() == expected.topk(5).indices.tolist() and scores.dtype == torch.float32
    assert torch.allclose(scores[0], expected.topk(5).values, atol=1e-5)
    # a known user without a history uses the stored one; with exclusion off, history items may come back
    assert [i for i, _ in served.recommend(users=["u0"], k=5)[0]] == [f"i{i}" for i in top[0].tolist()]
    assert served.recommend([None], k=5, users=["u0"]) == served.recommend(users=["u0"], k=5)
    unmasked = served.recommend_indices([SEQUENCES[0]], k=20, users=np.array([0]), exclude_history=False)[0][0]
    assert set(unmasked.tolist()) & set(SEQUENCES[0].tolist())


def test_recommend_for_a_new_user_uses_the_anonymous_token(served):
    history = ["i3", "i4", "i5"]
    new = served.recommend([history], k=4)[0]
    assert len(new) == 4 and not {i for i, _ in new} & set(history)
    anonymous = served.recommend_indices([np.array([3, 4, 5])], k=4)[0][0].tolist()
    assert [i for i, _ in new] == [f"i{i}" for i in anonymous]
    assert served.recommend([history], k=4, users=[None]) == [new]
    known = served.recommend([history], k=4, users=["u1"])[0]  # the same history as user u1 (a trained row)
    assert known != new


def test_unknown_ids_are_clear_errors(served):
    with pytest.raises(ValueError, match="unknown user id 'nobody'.*None"):
        served.recommend(users=["nobody"], k=3)
    with pytest.raises(ValueError, match="unknown item id 'i999'"):
        served.recommend([["i1", "i999"]], k=3)
    with pytest.raises(ValueError, match="histories of item ids, user ids, or both"):
        served.recommend(k=3)
    with pytest.raises(ValueError, match="history 0 is a string"):
        served.recommend(["i1"], k=3)
    with pytest.raises(ValueError, match="list of histories"):
        served.recommend("i1", k=3)
    with pytest.raises(ValueError, match="history 0 is None without a known user"):
        served.recommend([None], k=3)
    with pytest.raises(ValueError, match=r"user indices must be in 0\.\.5"):
        served.score([np.array([1])], np.array([6]))
    with pytest.raises(ValueError, match=r"outside 1\.\.40"):
        served.score([np.array([41])], np.array([0]))
    with pytest.raises(ValueError, match="k must be"):
        served.recommend(users=["u0"], k=0)


def test_ivf_index_matches_the_exact_one_when_every_cell_is_probed(served):
    queries = [SEQUENCES[0], SEQUENCES[3]]
    exact = served.recommend_indices(queries, k=5, users=np.array([0, 3]))[0]
    served.build_index("ivf", nlist=4, nprobe=4)
    try:
        assert torch.equal(served.recommend_indices(queries, k=5, users=np.array([0, 3]))[0], exact)
    finally:
        served.build_index()
    with pytest.raises(ValueError, match="unknown index kind"):
        served.build_index("annoy")


@pytest.mark.parametrize("tuning", ["frozen", "lora", "full"])
def test_save_and_load_reproduce_recommendations(tiny_llms, tmp_path, tuning):
    model = build(tiny_llms["llama"], tuning=tuning)
    _, loss = model(**batch_of(windows(SEQUENCES, 8)))
    loss.backward()
    with torch.no_grad():  # move every trainable weight, so a part that is not saved would show
        for p in model.parameters():
            if p.grad is not None:
                p.add_(torch.randn_like(p) * 0.05)
    model.eval().set_ids([f"u{u}" for u in range(6)], ["[PAD]"] + [f"i{i}" for i in range(1, 41)])
    model.set_histories(SEQUENCES)
    model.save_pretrained(tmp_path / "model")
    loaded = CLLM4Rec.from_pretrained(tmp_path / "model")
    assert loaded.settings == model.settings
    for user in ("u0", "u3", "u5"):
        (ids, scores), (loaded_ids, loaded_scores) = (zip(*m.recommend(users=[user], k=6)[0]) for m in (model, loaded))
        assert loaded_ids == ids and loaded_scores == pytest.approx(scores, abs=1e-5)
    histories = [np.array([1, 2]), np.array([], dtype=np.int64)]
    assert torch.allclose(loaded.score(histories), model.score(histories), atol=1e-5)
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["cllm4rec.safetensors"]
    model.save_pretrained(tmp_path / "model")  # overwriting an existing folder leaves no leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    with pytest.raises(FileNotFoundError, match="not a saved CLLM4Rec"):
        CLLM4Rec.from_pretrained(tmp_path)
    (tmp_path / "model" / "cllm4rec.safetensors").write_bytes(b"torn")
    with pytest.raises(ValueError, match="corrupt"):
        CLLM4Rec.from_pretrained(tmp_path / "model")


@pytest.mark.parametrize("tuning", ["frozen", "lora"])
def test_save_and_load_keep_a_random_llm(tiny_llms, tmp_path, tuning):
    model = build(tiny_llms["gpt2"], tuning=tuning, random_init=True).eval()
    model.set_ids([f"u{u}" for u in range(6)], ["[PAD]"] + [f"i{i}" for i in range(1, 41)])
    model.save_pretrained(tmp_path / "model")
    torch.manual_seed(123)  # a rebuilt random LLM differs; only the saved weights can make the scores equal
    loaded = CLLM4Rec.from_pretrained(tmp_path / "model")
    assert torch.allclose(loaded.score(SEQUENCES, np.arange(6)), model.score(SEQUENCES, np.arange(6)), atol=1e-5)


def test_settings_are_checked(tiny_llms):
    with pytest.raises(ValueError, match="tuning 'qlora'"):
        build(tiny_llms["llama"], tuning="qlora")
    with pytest.raises(ValueError, match="both 0"):
        build(tiny_llms["llama"], ce_weight=0.0)


# --- trainer -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_short_real_run_reports_both_protocols_and_saves_a_servable_model(tiny_llms, tmp_path):
    bindings = [f"CLLM4Rec.pretrained_path = '{tiny_llms['llama']}'", "CLLM4Rec.d_rec = 32",
                "CLLM4Rec.bpr_context_weight = 0.5", "CLLM4Rec.bpr_user_weight = 0.5", "fit.max_steps = 4",
                "fit.eval_every_steps = 2", "experiment.eval_rows = 30"]
    command = [sys.executable, "genrec/trainers/cllm4rec_trainer.py", "config/cllm4rec/ml100k_debug.gin",
               "--run-dir", str(tmp_path / "run")] + [a for b in bindings for a in ("--gin", b)]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["dataset"] == "ml-100k" and metrics["protocol"] == "full" and metrics["steps"] == 4
    assert metrics["extra_protocols"] == ["sampled"] and metrics["eval_rows"] == {"valid": 30, "test": 30}
    for which in ("valid", "test"):
        assert 0.0 <= metrics[which]["ndcg@10"] <= metrics[which]["recall@10"] <= 1.0
        sampled = metrics[which]["sampled"]
        assert set(sampled) >= {f"{m}@{k}" for m in ("hit", "ndcg") for k in (1, 5, 10, 20)}
        assert sampled["hit@10"] >= metrics[which]["recall@10"]  # 101 candidates are easier than 1,682
    assert metrics["tuning"] == "frozen" and metrics["trainable_parameters"] > 0
    model = CLLM4Rec.from_pretrained(tmp_path / "run" / "model")
    assert len(model.recommend(users=["196"], k=5)[0]) == 5 and len(model.recommend([["50", "172"]], k=5)[0]) == 5
