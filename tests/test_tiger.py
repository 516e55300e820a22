"""TIGER: constrained decoding, save/load, identifier ablations, errors, a short real run, resume after kill -9."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from genrec.config import parse_gin
from genrec.data.generative import NextItemPrefixes
from genrec.models import TIGER
from genrec.models.tiger import user_bucket
from genrec.semantic_ids import SemanticIDs, SemanticIDsError, ablation_ids
from interrupt import kill_at_first_checkpoint  # tests/interrupt.py

REPO = Path(__file__).resolve().parents[1]
# explicit, so that gin bindings a test parsed (config/tiger/ml100k.gin binds the encoder) change nothing
TINY = dict(num_layers=1, num_decoder_layers=1, d_model=32, num_heads=2, d_kv=16, d_ff=64, user_buckets=10,
            encoder_input="codes", encoder_attention="bidirectional", item_input=False, dropout=0.1)
N = 40


def _ids(n=N, sizes=(4, 4, 3), seed=0) -> SemanticIDs:
    rng = np.random.default_rng(seed)
    codes = np.stack(np.unravel_index(rng.permutation(int(np.prod(sizes)))[:n], sizes), 1)
    codes = np.vstack([np.full((1, len(sizes)), -1), codes]).astype(np.int64)
    return SemanticIDs(codes, list(sizes), "toy", "fp", ["[PAD]"] + [f"i{i}" for i in range(1, n + 1)])


def _model(ids=None, **kw) -> TIGER:
    torch.manual_seed(0)
    model = TIGER(ids or _ids(), **{**TINY, **kw})
    model.set_user_ids([f"u{u}" for u in range(5)])
    return model.eval()


def _teacher_forced_scores(model, history, user):
    """Sum of level log-probs of every item after ``history`` [N] (the quantity beams maximise)."""
    items = torch.arange(1, model.semantic_ids.num_items + 1)
    padded = torch.zeros(len(items), model.settings["max_history"], dtype=torch.long)
    padded[:, -len(history):] = torch.tensor(history)
    with torch.no_grad():
        log_probs, _ = model(padded, items, torch.full((len(items),), user))
    return log_probs.sum(-1)


@pytest.mark.parametrize("encoder_input,encoder_attention",
                         [("codes", "bidirectional"), ("items", "bidirectional"), ("items", "causal")])
def test_beams_are_distinct_catalogue_items_and_exact_with_a_full_beam(encoder_input, encoder_attention):
    # a beam as wide as the catalogue is exhaustive
    model = _model(num_beams=N, encoder_input=encoder_input, encoder_attention=encoder_attention)
    histories, users = [np.array([3, 1, 7]), np.array([5])], np.array([0, 4])
    items, scores = model.recommend_indices(histories, k=10, users=users)
    assert items.shape == scores.shape == (2, 10)
    for row, (history, user) in enumerate(zip(histories, users)):
        assert len(set(items[row].tolist())) == 10 and items[row].min() >= 1 and items[row].max() <= N
        expected = _teacher_forced_scores(model, history, int(user))
        top = expected.topk(10)
        assert items[row].tolist() == (top.indices + 1).tolist()
        assert torch.allclose(scores[row], top.values, atol=1e-4)
    # a narrow beam still returns distinct catalogue items, best first
    narrow = _model(num_beams=5, encoder_input=encoder_input)
    items, scores = narrow.recommend_indices(histories, k=5, users=users)
    assert all(len(set(r)) == 5 and min(r) >= 1 for r in items.tolist())
    assert torch.all(scores[:, :-1] >= scores[:, 1:])


@pytest.mark.parametrize("encoder_attention", ["bidirectional", "causal"])
def test_hf_generate_with_the_trie_processor_names_catalogue_items(encoder_attention):
    from transformers import LogitsProcessorList
    from transformers.modeling_outputs import BaseModelOutput

    from genrec.decoding import TrieLogitsProcessor
    from genrec.models.tiger import EOS

    model = _model(encoder_attention=encoder_attention)
    inputs = model.encoder_inputs(torch.tensor([[0, 3, 1, 7]]), torch.tensor([2]))
    if encoder_attention == "causal":  # T5's own encoder call is bidirectional: hand it the causal states
        inputs = {"encoder_outputs": BaseModelOutput(last_hidden_state=model.encode(inputs)),
                  "attention_mask": inputs["attention_mask"]}
    out = model.t5.generate(**inputs, num_beams=6, num_return_sequences=6, do_sample=False,
                            max_new_tokens=model.semantic_ids.num_levels + 1, length_penalty=0.0,
                            logits_processor=LogitsProcessorList([TrieLogitsProcessor(model.trie, 1, EOS)]))
    items = model.trie.values(model.trie.walk(out[:, 1:1 + model.semantic_ids.num_levels])).tolist()
    assert len(set(items)) == 6 and min(items) >= 1


def test_the_whole_catalogue_at_most():
    """k = N lists every item once (beams wider than the catalogue are fine); k > N is an error, as in
    LC-Rec and CLLM4Rec."""
    model = _model(_ids(n=6, sizes=(2, 2, 2)), num_beams=8)
    items, scores = model.recommend_indices([np.array([1, 2])], k=6)
    assert sorted(items[0].tolist()) == [1, 2, 3, 4, 5, 6] and torch.isfinite(scores).all()
    with pytest.raises(ValueError, match=r"k must be in 1\.\.6"):
        model.recommend_indices([np.array([1, 2])], k=7)


def test_training_step_and_user_token_slot():
    model = _model(max_history=3).train()
    history, user = torch.tensor([[0, 0, 4], [1, 2, 3]]), torch.tensor([1, 2])
    inputs = model.encoder_inputs(history, user)
    tokens, levels = inputs["input_ids"], model.semantic_ids.num_levels
    assert tokens.shape == (2, 1 + 3 * levels)
    user_token = model.first_user_token + user_bucket("u1", 10)
    assert tokens[0, 2 * levels].item() == user_token  # right before the first item
    assert tokens[0, 2 * levels + 1:].tolist() == model.item_tokens[4].tolist()
    _, loss = model(history, torch.tensor([5, 6]), user)
    loss.backward()
    assert torch.isfinite(loss) and model.t5.shared.weight.grad is not None
    smoothed = _model(label_smoothing=0.1).train()
    assert torch.isfinite(smoothed(history, torch.tensor([5, 6]), user)[1])


@pytest.mark.parametrize("item_input", [False, True])
def test_save_load_round_trip_gives_identical_recommendations(tmp_path, item_input):
    model = _model(num_beams=6, encoder_input="items" if item_input else "codes", item_input=item_input)
    histories = [["i3", "i1", "i7"], ["i5"]]
    before = model.recommend(histories, k=6, users=["u0", "u3"])
    model.save_pretrained(tmp_path / "model")
    loaded = TIGER.from_pretrained(tmp_path / "model")
    assert loaded.settings == model.settings and loaded.user_ids == model.user_ids
    assert loaded.recommend(histories, k=6, users=["u0", "u3"]) == before
    assert all(len({i for i, _ in row}) == 6 for row in before)


def test_item_input_adds_one_input_token_per_item():
    plain, with_items = _model(encoder_input="items"), _model(encoder_input="items", item_input=True)
    assert with_items.config.vocab_size == plain.config.vocab_size + N
    history = torch.tensor([[0, 3, 1]])
    embeds = with_items.encoder_inputs(history)["inputs_embeds"]  # [1, 2, D]: items 3 and 1, codes + own token
    shared = with_items.t5.shared.weight
    expected = shared[with_items.item_tokens[3]].sum(0) + shared[with_items.first_item_token + 2]
    assert torch.allclose(embeds[0, 0], expected)
    with pytest.raises(ValueError, match="item_input needs TIGER.encoder_input = 'items'"):
        _model(encoder_input="codes", item_input=True)


def test_embedding_init_std():
    assert 0.8 < _model().t5.shared.weight.std().item() < 1.2  # T5's own initialisation
    model = _model(embedding_init_std=0.02)
    assert 0.015 < model.t5.shared.weight.std().item() < 0.025
    assert model.t5.get_output_embeddings().weight is model.t5.shared.weight  # still tied
    with pytest.raises(ValueError, match="embedding_init_std must be > 0"):
        _model(embedding_init_std=0.0)


def test_clear_errors(tmp_path):
    model = _model()
    with pytest.raises(ValueError, match="history 1 is empty"):
        model.recommend([["i1"], []], k=5)
    with pytest.raises(ValueError, match="history 0 is empty"):
        model.recommend_indices([np.array([], dtype=np.int64)], k=5)
    with pytest.raises(ValueError, match="unknown item id 'nope'"):
        model.recommend([["nope"]], k=5)
    with pytest.raises(ValueError, match="unknown user id 'x'"):
        model.recommend([["i1"]], k=5, users=["x"])
    # a saved model whose semantic IDs do not fit its T5 vocabulary
    model.save_pretrained(tmp_path / "model")
    _ids(sizes=(5, 4, 3)).save(tmp_path / "model" / "semantic_ids.json")
    with pytest.raises(ValueError, match="vocab_size .* need"):
        TIGER.from_pretrained(tmp_path / "model")
    with pytest.raises(FileNotFoundError, match="not a saved TIGER"):
        TIGER.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="encoder_input"):
        TIGER(_ids(), encoder_input="bytes")


def test_semantic_ids_for_another_dataset_are_refused(tmp_path):
    from genrec.trainers.tiger_trainer import train_tiger

    wrong = tmp_path / "semantic_ids.json"
    _ids().save(wrong)  # 40 toy items with another fingerprint
    parse_gin(["config/tiger/ml100k_debug.gin"],
              [f"train_tiger.semantic_ids = {str(wrong)!r}", "train_tiger.rqvae_config = None",
               f"train_tiger.run_dir = {str(tmp_path / 'run')!r}"])
    with pytest.raises(SemanticIDsError, match="made for other data"):
        train_tiger()
    assert not (tmp_path / "run").exists()


def test_identifier_ablations_keep_the_shape():
    ids = _ids()
    assert ablation_ids(ids, "semantic") is ids
    shuffled = ablation_ids(ids, "random", seed=3)
    assert shuffled.codebook_sizes == ids.codebook_sizes and shuffled.codes.shape == ids.codes.shape
    assert sorted(map(tuple, shuffled.codes[1:])) == sorted(map(tuple, ids.codes[1:]))  # same tuples, reassigned
    assert not np.array_equal(shuffled.codes, ids.codes)
    assert np.array_equal(ablation_ids(ids, "random", seed=3).codes, shuffled.codes)  # seeded
    atomic = ablation_ids(ids, "atomic")
    assert atomic.codebook_sizes == [N] and atomic.codes[1:, 0].tolist() == list(range(N))
    items, _ = _model(atomic, num_beams=10).recommend_indices([np.array([1, 2])], k=10)
    assert len(set(items[0].tolist())) == 10 and items.min() >= 1
    with pytest.raises(ValueError, match="unknown item identifiers"):
        ablation_ids(ids, "hashed")


@pytest.mark.parametrize("encoder_input", ["codes", "items", "items+item_input"])
@pytest.mark.parametrize("user_buckets", [10, 0])
@pytest.mark.parametrize("stride", [None, 2])
def test_causal_windows_train_every_prefix_in_one_pass(encoder_input, user_buckets, stride):
    """A window's per-target log-probs are those of one-target (history -> next item) examples: each
    target's decoder sees exactly the encoder states of the user and the window's items before it
    (also with overlapping windows, whose early slots carry no label)."""
    from genrec.data.windows import SequenceWindows

    encoder_input, _, item_input = encoder_input.partition("+")
    model = _model(encoder_input=encoder_input, encoder_attention="causal", user_buckets=user_buckets, max_history=4,
                   item_input=bool(item_input))
    sequences = [np.array([3, 1, 7, 2]), np.array([5, 9]), np.array([4, 8, 6, 11, 12, 13, 1, 2, 3])]
    windows = SequenceWindows(sequences, 4, stride, with_user=True)
    batch = {key: torch.stack([windows[i][key] for i in range(len(windows))]) for key in ("users", "items", "labels")}
    with torch.no_grad():
        window_log_probs, window_loss = model(**batch)  # [R, C], R targets in (window, slot) order
        per_target, per_log_probs = [], []
        for b, j in (batch["labels"] != -100).nonzero().tolist():
            if j == 0 and not user_buckets:
                continue  # slot 0 is predicted from the user token alone
            history = torch.zeros(1, 4, dtype=torch.long)
            history[0, 4 - j:] = batch["items"][b, :j]
            users = batch["users"][b:b + 1] if user_buckets else None
            log_probs, loss = model(history, batch["labels"][b, j:j + 1], users)
            per_target.append(loss)
            per_log_probs.append(log_probs)
    assert len(per_target) == sum(len(seq) - (0 if user_buckets else 1) for seq in sequences)  # each target once
    assert torch.allclose(window_log_probs, torch.cat(per_log_probs), atol=1e-5)
    assert torch.allclose(window_loss, torch.stack(per_target).mean(), atol=1e-5)
    model.train()
    _, loss = model(**batch)
    loss.backward()
    assert torch.isfinite(loss) and model.t5.shared.weight.grad is not None
    with pytest.raises(ValueError, match="encoder_attention = 'causal'"):
        _model(encoder_attention="bidirectional")(**batch)


def test_prefix_examples():
    data = NextItemPrefixes([np.array([5, 6, 7, 8]), np.array([1]), np.array([2, 3])], max_history=2)
    assert len(data) == 4
    assert [data[i]["history"].tolist() for i in range(4)] == [[0, 5], [5, 6], [6, 7], [0, 2]]
    assert [int(data[i]["target"]) for i in range(4)] == [6, 7, 8, 3]
    assert [int(data[i]["user"]) for i in range(4)] == [0, 0, 0, 2]


# ---------------------------------------------------------------- real runs on ml-100k


@pytest.fixture(scope="module")
def ml100k_ids(tmp_path_factory):
    """Random unique code tuples for ml-100k's items (the RQ-VAE build is tested elsewhere)."""
    from genrec.data import load_dataset

    interactions, _ = load_dataset("ml-100k")
    sizes = [16, 16, 16]
    rng = np.random.default_rng(0)
    flat = rng.permutation(16**3)[:interactions.num_items]
    codes = np.stack(np.unravel_index(flat, sizes), 1)
    path = tmp_path_factory.mktemp("ids") / "semantic_ids.json"
    SemanticIDs.from_codes(codes, sizes, interactions).save(path)
    return path


def _trainer(run_dir, ids_path, **popen):
    bindings = [f"train_tiger.semantic_ids = {str(ids_path)!r}", "train_tiger.rqvae_config = None",
                "experiment.eval_rows = 40", "TIGER.num_layers = 1", "TIGER.num_decoder_layers = 1",
                "TIGER.d_model = 32", "TIGER.d_kv = 16", "TIGER.d_ff = 64", "TIGER.num_beams = 10",
                "fit.max_steps = 24", "fit.batch_size = 64", "fit.eval_every_steps = 6", "fit.learning_rate = 0.003"]
    command = [sys.executable, "genrec/trainers/tiger_trainer.py", "config/tiger/ml100k_debug.gin",
               "--run-dir", str(run_dir)] + [a for b in bindings for a in ("--gin", b)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, **popen)


@pytest.mark.slow
def test_short_real_run_then_resume_after_kill(tmp_path, ml100k_ids):
    full = _trainer(tmp_path / "full", ml100k_ids)
    out, _ = full.communicate(timeout=600)
    assert full.returncode == 0, out
    metrics = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert metrics["dataset"] == "ml-100k" and metrics["protocol"] == "full" and metrics["steps"] == 24
    assert metrics["test"]["valid_item_rate"] == 1.0 and metrics["test"]["duplicate_rate"] == 0.0
    assert {"ndcg@10", "recall@10", "mrr@10"} <= set(metrics["test"]) and metrics["item_ids"] == "semantic"
    model = TIGER.from_pretrained(tmp_path / "full" / "model")
    recs = model.recommend([["1", "2", "3"]], k=10, users=[model.user_ids[0]])[0]
    assert len({item for item, _ in recs}) == 10

    kill_at_first_checkpoint(_trainer(tmp_path / "cut", ml100k_ids), tmp_path / "cut")
    resumed = _trainer(tmp_path / "cut", ml100k_ids)
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    assert "resuming" in out
    again = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert again["valid"] == metrics["valid"] and again["test"] == metrics["test"] and again["steps"] == 24
