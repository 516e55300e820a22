"""RecExplainer: placeholder soft tokens, connector gradients, alignment tasks from a target's scores,
fidelity metrics, and a few real trainer steps on ml-100k. A tiny random Llama with SmolLM2's tokenizer
and a tiny random SASRec stand in for the LLM and the target."""

import json

import gin
import numpy as np
import pytest
import torch
from torch import nn

from genrec.config import parse_gin
from genrec.data import ItemCatalog, load_dataset
from genrec.explain.fidelity import fidelity, name_trie, ndcg_of_order
from genrec.explain.model import ITEM, USER, RecExplainer
from genrec.explain.tasks import AlignmentTasks
from genrec.llm import tiny_causal_lm
from genrec.llm.lora import lora_settings
from genrec.llm.soft_tokens import placeholder_embeds
from genrec.models.sasrec import SASRec

CATALOG = ItemCatalog(item_ids=["[PAD]"] + [str(i) for i in range(1, 9)],
                      fields={"title": [""] + [f"Movie {c}" for c in "ABCDEFGH"], "year": [""] + ["1999"] * 8})
HISTORIES = [np.array([1, 2]), np.array([3]), np.array([4, 5, 6])]


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory):
    return str(tiny_causal_lm(tmp_path_factory.mktemp("explainer-llm") / "llama", "llama", seed=2))


def build(path, mode="intention", rec_dim=6, seed=0):
    torch.manual_seed(seed)
    return RecExplainer(rec_dim=rec_dim, mode=mode, pretrained_path=path, tuning="lora",
                        lora=lora_settings(r=4, alpha=8, target_modules=["q_proj", "v_proj"]))


def toy_tasks(mode, rec_dim=6):
    scores = torch.arange(9, dtype=torch.float32).repeat(3, 1)  # item 8 best, then 7, ...
    scores[:, 0] = float("-inf")
    for u, h in enumerate(HISTORIES):
        scores[u, h] = float("-inf")
    torch.manual_seed(0)
    return AlignmentTasks(scores, torch.randn(3, rec_dim), torch.randn(9, rec_dim), HISTORIES, CATALOG, mode,
                          rank_pool=6, interest_top=2, negative_from=4)


def test_placeholder_embeds_add_vectors_in_row_major_order_and_nowhere_else():
    table = nn.Embedding(10, 3)
    ids = torch.tensor([[1, 10, 2, 11], [11, 3, 10, 4]])
    user, item = torch.randn(2, 3), torch.randn(2, 3)
    out = placeholder_embeds(table, ids, {10: 5, 11: 6}, {10: user, 11: item})
    words = table.weight.detach()
    assert torch.allclose(out[0, 1], words[5] + user[0]) and torch.allclose(out[1, 2], words[5] + user[1])
    assert torch.allclose(out[0, 3], words[6] + item[0]) and torch.allclose(out[1, 0], words[6] + item[1])
    assert torch.allclose(out[0, 0], words[1]) and torch.allclose(out[1, 3], words[4])
    replaced = placeholder_embeds(table, ids, {10: 5, 11: 6}, {10: user}, mode="replace")
    assert torch.allclose(replaced[0, 1], user[0]) and torch.allclose(replaced[0, 3], words[6])
    with pytest.raises(ValueError, match="occurs 2 times"):
        placeholder_embeds(table, ids, {10: 5, 11: 6}, {10: user[:1]})


def test_intention_placeholders_carry_the_connector_output(tiny_llm):
    model = build(tiny_llm)
    ids = torch.tensor([model.encode(f"A user {USER} likes Movie A {ITEM}.")])
    assert (ids == model.user_token).sum() == 1 and (ids == model.item_token).sum() == 1
    user, item = torch.randn(1, 6), torch.randn(1, 6)
    embeds = model.embed(ids, user, item)
    words = model.llm.get_input_embeddings()
    at_user, at_item = (ids[0] == model.user_token).nonzero()[0, 0], (ids[0] == model.item_token).nonzero()[0, 0]
    with torch.no_grad():
        assert torch.allclose(embeds[0, at_user], words.weight[model.anchors[model.user_token]]
                              + model.connectors["user"](user)[0], atol=1e-6)
        assert torch.allclose(embeds[0, at_item], words.weight[model.anchors[model.item_token]]
                              + model.connectors["item"](item)[0], atol=1e-6)
        other = embeds[0, 0]
        assert torch.allclose(other, words(ids[:, :1])[0, 0])
    assert not torch.allclose(model.embed(ids, 2 * user, item)[0, at_user], embeds[0, at_user])


def test_gradients_reach_both_connectors_and_the_adapters(tiny_llm):
    model = build(tiny_llm)
    ids, labels = model.training_example(f"A user {USER}. Would they like Movie A {ITEM}? Answer:", " Yes")
    batch = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
             "labels": torch.tensor([labels]), "user_vectors": torch.randn(1, 6), "item_vectors": torch.randn(1, 6)}
    _, loss = model(**batch)
    loss.backward()
    for name in ("user", "item"):
        for layer in (model.connectors[name][0], model.connectors[name][2]):
            assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    lora = [p for n, p in model.llm.named_parameters() if "lora_" in n]
    assert lora and any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)
    frozen = [p for n, p in model.llm.named_parameters() if "lora_" not in n]
    assert all(not p.requires_grad for p in frozen)


def test_continuation_scores_equal_the_mean_log_probability_of_a_plain_forward(tiny_llm):
    model = build(tiny_llm).eval()
    prompt = model.encode(f"A user {USER} and Movie A {ITEM}. Answer:")
    conts = [model.encode(" Yes"), model.encode(" Movie B (1999)")]
    user, item = torch.randn(1, 6), torch.randn(1, 6)
    scores = model.continuation_scores(prompt, conts, user, item)
    for cont, score in zip(conts, scores.tolist()):
        ids = torch.tensor([prompt + cont])
        with torch.no_grad():
            logits = model.llm(inputs_embeds=model.embed(ids, user, item)).logits[0].float()
        lp = torch.log_softmax(logits, -1)
        expected = np.mean([float(lp[len(prompt) - 1 + k, t]) for k, t in enumerate(cont)])
        assert score == pytest.approx(expected, abs=1e-4)


def test_behaviour_mode_is_text_only(tiny_llm):
    model = build(tiny_llm, mode="behaviour")
    assert len(model.connectors) == 0
    with pytest.raises(ValueError, match="behaviour-mode"):
        model.embed(torch.tensor([model.encode(f"x {USER}")]))


def test_alignment_tasks_answer_what_the_target_does():
    tasks = toy_tasks("intention")
    assert tasks.ranked(0).tolist() == [8, 7, 6, 5, 4, 3]
    nxt = tasks.next_item(0)
    assert nxt.answer == " Movie H (1999)" and nxt.prompt.count(USER) == 1 and len(nxt.user_vectors) == 1
    rank = tasks.rank(2, np.random.default_rng(0))
    assert sorted(rank.items) == sorted(rank.truth) and len(rank.truth) == 5
    assert rank.truth == sorted(rank.truth, reverse=True)  # the target prefers higher item numbers here
    assert rank.answer == "".join(f"\nMovie {'ABCDEFGH'[i - 1]} (1999)" for i in rank.truth)
    assert len(rank.item_vectors) == 5 and torch.equal(rank.item_vectors, tasks.item_vecs[rank.items])
    yes, no = tasks.interest(0, True, np.random.default_rng(0)), tasks.interest(0, False, np.random.default_rng(0))
    assert yes.answer == " Yes" and yes.items[0] in (8, 7) and no.answer == " No" and no.items[0] in (4, 3)
    behaviour = toy_tasks("behaviour")
    assert "recovery" not in behaviour.tasks and "history" not in behaviour.tasks
    assert all(USER not in e.prompt and ITEM not in e.prompt for e in behaviour.examples([0, 1, 2]))
    assert "Movie A (1999); Movie B (1999)" in behaviour.user_text(0)


def test_ndcg_of_order_is_one_for_the_target_order_and_hand_checked_otherwise():
    assert ndcg_of_order([3, 1, 2], [3, 1, 2]) == pytest.approx(1.0)
    ideal = 3 + 2 / np.log2(3) + 1 / np.log2(4)
    assert ndcg_of_order([2, 1, 3], [3, 1, 2]) == pytest.approx((1 + 2 / np.log2(3) + 3 / np.log2(4)) / ideal)


def test_fidelity_runs_on_every_mode_with_valid_generations(tiny_llm):
    model = build(tiny_llm, mode="hybrid").eval()
    metrics = fidelity(model, toy_tasks("hybrid"), [0, 1, 2], name_trie(model, CATALOG))
    assert set(metrics) == {"next_hit@5", "rank_ndcg@5", "interest_accuracy", "fidelity"}
    assert 0 <= metrics["next_hit@5"] <= 1 and 0.4 < metrics["rank_ndcg@5"] <= 1
    with pytest.raises(ValueError, match="mode"):
        fidelity(model, toy_tasks("behaviour"), [0], name_trie(model, CATALOG))


def test_trainer_runs_a_few_steps_on_ml100k(tiny_llm, tmp_path):
    from genrec.trainers.explain_trainer import train_explainer

    interactions, _ = load_dataset("ml-100k")
    torch.manual_seed(0)
    target = SASRec(num_items=interactions.num_items, max_history=10, hidden_size=8, num_layers=1, num_heads=1,
                    inner_size=16)
    target.set_item_ids(interactions.item_ids)
    target.save_pretrained(tmp_path / "target" / "model")
    parse_gin([], [f"RecExplainer.pretrained_path = '{tiny_llm}'", "RecExplainer.mode = 'hybrid'",
                   "lora_settings.r = 4", "lora_settings.target_modules = ['q_proj', 'v_proj']",
                   "fit.max_steps = 3", "fit.batch_size = 4", "fit.max_epochs = 1", "fit.metric = 'fidelity'",
                   "fit.log_every_steps = 1"])
    try:
        metrics = train_explainer(run_dir=str(tmp_path / "run"), target_run=str(tmp_path / "target"),
                                  valid_users=2, test_users=2, explanations=1)
    finally:
        gin.clear_config()
    assert metrics["steps"] == 3 and metrics["mode"] == "hybrid" and metrics["test_users"] == 2
    assert 0 <= metrics["test"]["fidelity"] <= 1
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert len(losses) == 3 and all(np.isfinite(losses))
    explanation = json.loads((tmp_path / "run" / "explanations.jsonl").read_text().splitlines()[0])
    assert explanation["item"] and isinstance(explanation["explanation"], str)
