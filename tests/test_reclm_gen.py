"""RecLM-gen: metric and reward definitions by hand-computed cases, teacher-distilled control labels,
evaluation of a tiny model, and a short real run of the trainer on ml-100k with a tiny LLM."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from genrec.decoding.title_trie import EOI, SOI, catalogue_titles
from genrec.evaluation.reclm_eval import evaluate_answers, teacher_ranks
from genrec.evaluation.reclm_metrics import (answer_metrics, category_rate_correct, list_reward, mean_metrics,
                                             position_rewards)
from genrec.llm.pretrained import load_tokenizer, tiny_causal_lm
from genrec.llm.reclm_tasks import RecLMData, category_items, reclm_instruction
from genrec.llm.tasks import PromptFormat
from genrec.models.popularity import MostPopular
from genrec.models.reclm import RecLM

REPO = Path(__file__).resolve().parents[1]


def test_answer_metrics_by_hand():
    # asked for 4; answer has 5 entries: item 7, a non-existent title, 7 again, history item 2, target 9
    m = answer_metrics([7, -1, 7, 2, 9], item_count=4, history={2, 3}, target=9, category_items={7, 2})
    assert m["NonExistRate"] == 1.0  # only the -1 among the first four
    assert m["RepeatRate"] == 1.0  # the second 7
    assert m["InHistoryRate"] == 1.0  # 2
    assert m["CorrectCount"] == 0.0  # 5 entries for 4 asked
    assert m["Recall"] == 0.0 and m["NDCG"] == 0.0  # the target is 5th, beyond n
    assert m["TargetCategoryRate"] == 3.0  # 7, 7, 2
    hit = answer_metrics([4, 9, 5], item_count=3, history=set(), target=9)
    assert hit["Recall"] == 1.0 and hit["MRR"] == 0.5 and hit["NDCG"] == pytest.approx(1 / math.log2(3))
    assert hit["CorrectCount"] == 1.0 and "TargetCategoryRate" not in hit
    assert mean_metrics([{"a": 1.0}, {"a": 0.0, "b": 2.0}]) == {"a": 0.5, "b": 2.0}
    with pytest.raises(ValueError, match="item_count"):
        answer_metrics([1], 0, set())


def test_category_rate_correct_by_hand():
    assert category_rate_correct(3, 0, "at_least", 3) == 1.0 and category_rate_correct(2, 0, "at_least", 3) == 0.0
    assert category_rate_correct(4, 0, "exactly", 3) == 1.0 and category_rate_correct(5, 0, "exactly", 3) == 0.0
    assert category_rate_correct(2, 1, "at_most", 3) == 1.0 and category_rate_correct(3, 1, "at_most", 3) == 0.0
    with pytest.raises(ValueError, match="unknown proportion"):
        category_rate_correct(1, 0, "most", 1)


def test_position_rewards_and_list_reward_by_hand():
    ranks = {5: 0, 6: 2, 9: 40}
    out = [5, 9, -1, 5, 3, 6]  # n = 5: 6 is beyond it; 3 is in the history
    rewards = position_rewards(out, 5, history={3}, target=9, teacher_rank=ranks)
    assert rewards == [pytest.approx(1 / math.log2(3)), 1.0, -1.0, -1.0, -1.0, -1.0]
    best = sum(1 / math.log2(i + 2) ** 2 for i in range(5))
    ranking = (1 / math.log2(3)) / math.log2(2) + 1.0 / math.log2(3) - 4
    assert list_reward(rewards, out, 5, 9, alpha=0.5) == pytest.approx(0.5 * ranking / best + 0.5 / math.log2(3))
    assert position_rewards([6], 1, set(), 9, lambda item: 2) == [pytest.approx(1 / math.log2(5))]


def test_teacher_ranks_follow_scores():
    teacher = MostPopular([np.array([1, 2, 2, 3, 3, 3])], num_items=4)
    ranks = teacher_ranks(teacher, [np.array([1])])
    assert ranks[0, 1:].tolist() == [2, 1, 0, 3] and ranks[0, 0] == 4


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("bundled:smollm2-135m-instruct")


def _toy(tokenizer):
    raw = [""] + [f"Movie {chr(65 + i)} ({1990 + i})" for i in range(12)]
    genres = [""] + ["Comedy" if i % 2 else "Drama" for i in range(1, 13)]
    sequences = [np.array([1, 2, 3, 4, 5, 6]), np.array([7, 8, 9, 10, 11, 12]), np.array([2, 4, 6, 8])]
    return raw, genres, sequences


def test_labels_are_teacher_distilled_and_obey_controls(tokenizer):
    raw, genres, sequences = _toy(tokenizer)
    teacher = MostPopular(sequences, 12)
    data = RecLMData(sequences, raw, genres, PromptFormat(tokenizer), teacher, span_tokens=False,
                     num_examples=120, list_length=4, max_history=3, noun="movie", seed=1)
    categories = category_items(genres)
    assert categories["Comedy"] == {1, 3, 5, 7, 9, 11}
    popular = [int(i) for i in torch.argsort(-teacher.counts[1:], stable=True) + 1]
    assert set(data.counts) == {"sequential", "item_count", "plus_category", "minus_category", "proportion"}
    for field in data.fields:
        out, n, target = field["output"], field["item_count"], field["target"]
        assert out[0] == target and len(out) == n and len(set(out)) == n
        assert not set(out[1:]) & set(field["history"])
        if field["task"] == "sequential":
            expected = [i for i in popular if i != target and i not in field["history"]][: n - 1]
            counts = teacher.counts.tolist()
            got = [counts[i] for i in out[1:]]
            assert got == sorted(got, reverse=True) == [counts[i] for i in expected]  # the teacher's order (ties aside)
        if field["task"] == "plus_category":
            assert set(out) <= categories[field["category"]]
        if field["task"] == "minus_category":
            assert not set(out) & categories[field["category"]]
        if field["task"] == "proportion":
            assert len(set(out) & categories[field["category"]]) == field["category_count"]
    example = data.fields[0]
    ids, labels = data.examples[0]
    answer = tokenizer.decode(ids[labels != -100][:-1])
    assert answer == "\n".join(raw[i] for i in example["output"])
    text = reclm_instruction(["A", "B"], "proportion", 5, "movie", "Comedy", "at_most", 2)
    assert text.endswith("Recommend 5 movies, at most 2 of them Comedy movies, one per line.")
    with pytest.raises(ValueError, match="need item categories"):
        RecLMData(sequences, raw, [""] * 13, PromptFormat(tokenizer), teacher, tasks=["plus_category"])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(tiny_causal_lm(tmp_path_factory.mktemp("reclm_gen") / "llama", "llama", seed=5))


def test_span_labels_and_a_training_step_lower_the_scope_mask_loss(tiny):
    model = RecLM(pretrained_path=tiny, list_length=3, noun="movie")
    raw, genres, sequences = _toy(model.tokenizer)
    titles = catalogue_titles(raw, model.tokenizer)
    model.attach(titles)
    data = RecLMData(sequences, titles, genres, model.format, MostPopular(sequences, 12), num_examples=8,
                     list_length=3, max_history=3, seed=0)
    ids, labels = data.examples[0]
    assert model.tokenizer.decode(ids[labels != -100][:-1]).count(SOI) == 3
    batch = data.__getitems__(range(8))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(3):
        _, loss = model(**batch)
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert losses[-1] < losses[0]


def test_activation_checkpointing_gives_the_same_loss_and_gradients(tiny):
    """RecLM.gradient_checkpointing trades compute for memory only (full fine-tuning and LoRA)."""
    from genrec.llm.lora import lora_settings

    results = []
    for checkpointing in (False, True):
        for lora in (False, True):
            torch.manual_seed(0)
            model = RecLM(pretrained_path=tiny, list_length=3, noun="movie", gradient_checkpointing=checkpointing)
            raw, genres, sequences = _toy(model.tokenizer)
            titles = catalogue_titles(raw, model.tokenizer)
            model.attach(titles)
            if lora:
                model.enable_lora(lora_settings())
            data = RecLMData(sequences, titles, genres, model.format, MostPopular(sequences, 12), num_examples=4,
                             list_length=3, max_history=3, seed=0)
            model.train()
            assert any(getattr(m, "gradient_checkpointing", False) for m in model.llm.modules()) is checkpointing
            _, loss = model(**data.__getitems__(range(4)))
            loss.backward()
            results.append((loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}))
    for plain, recomputed in zip(results[:2], results[2:]):
        assert plain[0] == pytest.approx(recomputed[0], abs=1e-6)
        assert plain[1].keys() == recomputed[1].keys()
        assert all(torch.allclose(plain[1][n], recomputed[1][n], atol=1e-6) for n in plain[1])


class _Rows:
    """A minimal evaluator: histories, targets, ks and evaluate_ranked over every row at once."""

    def __init__(self, histories, targets):
        self.histories, self.targets, self.ks = histories, np.array(targets), (1, 3)

    def evaluate_ranked(self, recommend, accelerator=None):
        ranked = recommend(np.arange(len(self.histories)), self.histories)
        return {"hit@3": float((ranked[:, :3] == torch.as_tensor(self.targets)[:, None]).any(1).float().mean())}


def test_evaluate_answers_constrained_has_no_nonexistent_items(tiny):
    model = RecLM(pretrained_path=tiny, list_length=3, noun="movie")
    raw, _, sequences = _toy(model.tokenizer)
    model.attach(catalogue_titles(raw, model.tokenizer))
    rows = _Rows([np.array([1, 2]), np.array([7, 8, 9])], [3, 10])
    metrics = evaluate_answers(model, rows, MostPopular(sequences, 12), constrained=True)
    assert metrics["NonExistRate"] == 0.0 and metrics["ExactNonExistRate"] == 0.0
    assert metrics["RepeatRate"] == 0.0 and metrics["CorrectCount"] == 1.0 and "RewardSum" in metrics
    free = evaluate_answers(model, rows, None, constrained=False)
    assert free["CorrectCount"] == 0.0 and free["hit@3"] == 0.0  # a random model's free text lists no 3 titles
    assert EOI not in model.titles[1]


@pytest.mark.slow
def test_trainer_short_real_run(tiny, tmp_path):
    bindings = [f"RecLM.pretrained_path = '{tiny}'", "train_reclm.teacher = 'popularity'", "experiment.eval_rows = 3",
                "fit.max_steps = 2", "fit.batch_size = 2", "RecLMData.num_examples = 8", "RecLM.list_length = 3",
                "RecLMData.list_length = 3", "train_reclm.control_rows = 2"]
    command = [sys.executable, "genrec/trainers/reclm_trainer.py", "config/reclm/ml100k/sft_debug.gin",
               "--run-dir", str(tmp_path / "run"), "--threads", "1"] + [a for b in bindings for a in ("--gin", b)]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["teacher"] == "popularity" and metrics["eval_rows"] == {"valid": 3, "test": 3}
    for which in ("valid", "test"):
        assert metrics[which]["NonExistRate"] == 0.0 and 0.0 <= metrics[which]["ndcg@10"] <= 1.0
    assert "plus_category.TargetCategoryRate" in metrics["controls"]
    loaded = RecLM.from_pretrained(tmp_path / "run" / "model")
    assert loaded.settings["lora"]["r"] == 16 and len(loaded.titles) == 1683
