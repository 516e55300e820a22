"""LC-Rec: codebook tokens, constrained decoding (two paths), recommend, save/load, LoRA, the trainer.

A tiny randomly initialised llama with SmolLM2's real tokenizer stands in for the LLM, so every
test exercises the real tokenizer, chat template, peft and generation code in seconds.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from genrec.data import load_dataset
from genrec.llm import tiny_causal_lm
from genrec.models import LCRec
from genrec.evaluation import list_health
from genrec.llm.lora import lora_settings
from genrec.semantic_ids import SemanticIDs, SemanticIDsError, ensure_semantic_ids

REPO = Path(__file__).resolve().parents[1]
SIZES = [8, 8, 32]  # 2,048 code tuples for ml-100k's 1,682 items


@pytest.fixture(scope="module")
def ml100k():
    interactions, catalog = load_dataset("ml-100k")
    return interactions, catalog


@pytest.fixture(scope="module")
def semantic_ids(ml100k):
    """Unique random code tuples for every ml-100k item (the decoder only needs them unique)."""
    interactions, _ = ml100k
    flat = np.random.default_rng(0).permutation(np.prod(SIZES))[: interactions.num_items]
    codes = np.stack(np.unravel_index(flat, SIZES), axis=1)
    return SemanticIDs.from_codes(codes, SIZES, interactions)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(tiny_causal_lm(tmp_path_factory.mktemp("llm") / "tiny-llama", seed=3))


def build(tiny, ml100k, semantic_ids, init="default", **kwargs):
    interactions, catalog = ml100k
    torch.manual_seed(0)
    model = LCRec(pretrained_path=tiny, num_beams=10, **kwargs)
    model.attach(semantic_ids, init=init, item_texts=catalog.texts())
    return model.eval()


@pytest.fixture(scope="module")
def model(tiny, ml100k, semantic_ids):
    return build(tiny, ml100k, semantic_ids)


HISTORIES = [np.array([1, 2, 3]), np.array([40]), np.arange(5, 60), np.array([7, 9])]


def test_codebook_tokens_are_single_ids(model, semantic_ids):
    table = model.code_token_table()
    assert table.shape == (3, 32) and (table[:2, 8:] == -1).all() and (table[2] >= 0).all()
    used = table[table >= 0]
    assert len(np.unique(used)) == sum(SIZES) and model.llm.get_input_embeddings().weight.shape[0] == len(model.tokenizer)
    for level, code in [(0, 0), (1, 7), (2, 31)]:
        assert model.tokenizer.encode(f"<C{level}_{code}>", add_special_tokens=False) == [table[level, code]]
    # an item's code string is exactly its C tokens, also next to ordinary text
    ids = model.tokenizer.encode("items: " + model.item_code_strings[5] + ", next", add_special_tokens=False)
    start = int(used.min())
    assert [i for i in ids if i >= start] == semantic_ids.token_ids(start)[5].tolist()
    with pytest.raises(ValueError, match="already added"):
        model.add_codebook_tokens(3, SIZES)


def test_mean_init_sets_rows_to_the_mean_of_item_text_tokens(tiny, ml100k, semantic_ids):
    interactions, catalog = ml100k
    model = build(tiny, ml100k, semantic_ids, init="mean")
    embeddings = model.llm.get_input_embeddings().weight
    table = model.code_token_table()
    items = np.flatnonzero(semantic_ids.codes[1:, 0] == 3)  # item indices - 1 with code 3 at level 0
    pieces = model.tokenizer([catalog.text(i + 1) for i in items], add_special_tokens=False)["input_ids"]
    expected = torch.stack([embeddings[torch.tensor(p)].mean(0) for p in pieces]).mean(0)
    assert torch.allclose(embeddings[table[0, 3]], expected, atol=1e-5)
    with pytest.raises(ValueError, match="init"):
        LCRec(pretrained_path=tiny).add_codebook_tokens(3, SIZES, init="zeros")


def test_both_decoders_return_the_same_distinct_catalogue_items(model, ml100k):
    interactions, _ = ml100k
    prompts = model.prompts(HISTORIES)
    items, scores = model.generate(**prompts, num_beams=12, method="beam")
    hf_items, hf_scores = model.generate(**prompts, num_beams=12, method="hf")
    assert items.shape == (4, 12)
    assert ((items >= 1) & (items <= interactions.num_items)).all()  # every beam is a catalogue item
    assert all(len(set(row)) == 12 for row in items.tolist())  # distinct beams
    assert (scores[:, :-1] >= scores[:, 1:] - 1e-6).all()  # best first
    assert torch.equal(items, hf_items)
    assert torch.allclose(scores, hf_scores, atol=1e-3)
    # a user's list does not depend on who else is in the batch (left padding, shared prompt cache)
    alone, _ = model.generate(**model.prompts(HISTORIES[1:2]), num_beams=12)
    assert torch.equal(alone[0], items[1])


def test_recommend_maps_raw_ids_and_refuses_bad_histories(model, ml100k):
    interactions, _ = ml100k
    raw = [[interactions.item_ids[i] for i in h] for h in HISTORIES[:2]]
    lists = model.recommend(raw, k=5)
    assert all(len(row) == 5 for row in lists)
    indices, scores = model.recommend_indices(HISTORIES[:2], k=5)
    assert [[item for item, _ in row] for row in lists] == [[interactions.item_ids[i] for i in row]
                                                             for row in indices.tolist()]
    assert [[score for _, score in row] for row in lists] == scores.tolist()
    with pytest.raises(ValueError, match="unknown item id 'no-such-film'"):
        model.recommend([["no-such-film"]])
    with pytest.raises(ValueError, match="history 1 is empty"):
        model.recommend([raw[0], []])
    with pytest.raises(ValueError, match="list of histories"):
        model.recommend(raw[0][0])
    with pytest.raises(ValueError, match="k must be"):
        model.recommend(raw, k=0)


def test_save_and_load_reproduce_recommendations(model, tmp_path):
    model.save_pretrained(tmp_path / "saved")
    assert not list((tmp_path / "saved").rglob("*.bin")) and list((tmp_path / "saved").rglob("*.safetensors"))
    loaded = LCRec.from_pretrained(tmp_path / "saved")
    assert loaded.codebook_sizes == SIZES and loaded.code_token_table().tolist() == model.code_token_table().tolist()
    assert loaded.tokenizer.encode("<C2_31>", add_special_tokens=False) == [model.code_token_table()[2, 31]]
    expected = model.recommend_indices(HISTORIES, k=10)
    got = loaded.recommend_indices(HISTORIES, k=10)
    assert torch.equal(expected[0], got[0]) and torch.allclose(expected[1], got[1], atol=1e-5)
    with pytest.raises(FileNotFoundError, match="not a saved LCRec"):
        LCRec.from_pretrained(tmp_path)


def test_lora_trains_adapters_and_new_rows_only_and_round_trips(tiny, ml100k, semantic_ids, tmp_path):
    model = build(tiny, ml100k, semantic_ids)
    table = model.code_token_table()
    new = torch.as_tensor(np.unique(table[table >= 0]))
    before = model.llm.get_input_embeddings().weight.detach().clone()
    frozen = {n: p.detach().clone() for n, p in model.llm.named_parameters() if "layers.0.mlp" in n}
    model.enable_lora(lora_settings(r=4, alpha=8, dropout=0.0))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "trainable_tokens" in n for n in trainable)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = model.format.encode(["Recommend."], [model.item_code_strings[4]])
    for _ in range(2):
        _, loss = model(**batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    after = model.llm.get_input_embeddings()(torch.arange(before.shape[0])).detach()
    old = torch.ones(before.shape[0], dtype=torch.bool)
    old[new] = False
    assert torch.equal(after[old], before[old])  # the pretrained vocabulary is untouched
    assert not torch.allclose(after[new], before[new])  # the codebook rows learned
    for name, p in model.llm.named_parameters():
        base = name.replace("base_model.model.", "").replace(".base_layer", "")
        if base in frozen:
            assert torch.equal(p, frozen[base])
    model.save_pretrained(tmp_path / "lora")
    assert (tmp_path / "lora" / "llm" / "adapter_model.safetensors").is_file()
    loaded = LCRec.from_pretrained(tmp_path / "lora")
    expected, got = model.recommend_indices(HISTORIES, k=10), loaded.recommend_indices(HISTORIES, k=10)
    assert torch.equal(expected[0], got[0]) and torch.allclose(expected[1], got[1], atol=1e-5)


def test_lora_with_gradient_checkpointing_gets_gradients(tiny, ml100k, semantic_ids):
    model = build(tiny, ml100k, semantic_ids, gradient_checkpointing=True)
    model.enable_lora(lora_settings(r=4, alpha=8, dropout=0.0))
    model.train()
    _, loss = model(**model.format.encode(["Recommend.", "Again."], [model.item_code_strings[4], "Heat"]))
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert any(g.abs().sum() > 0 for n, g in grads.items() if "lora_B" not in n)


def test_semantic_ids_must_fit_the_model_and_the_data(model, tiny, ml100k, semantic_ids, tmp_path):
    interactions, _ = ml100k
    other = SemanticIDs(semantic_ids.codes, [8, 8, 64], semantic_ids.dataset, semantic_ids.fingerprint,
                        semantic_ids.item_ids)
    with pytest.raises(ValueError, match="vocabulary disagrees with the IDs"):
        model.attach(other)
    # a file made for other data (here: ml-100k filtered to ratings >= 4) is refused by the trainer
    filtered, _ = load_dataset("ml-100k", min_rating=4)
    flat = np.random.default_rng(1).permutation(np.prod(SIZES))[: filtered.num_items]
    foreign = SemanticIDs.from_codes(np.stack(np.unravel_index(flat, SIZES), axis=1), SIZES, filtered)
    foreign.save(tmp_path / "semantic_ids.json")
    with pytest.raises(SemanticIDsError, match="made for other data"):
        ensure_semantic_ids(tmp_path / "semantic_ids.json", None, interactions)
    from genrec.config import ConfigError
    with pytest.raises(ConfigError, match="no RQ-VAE config is named"):
        ensure_semantic_ids(tmp_path / "missing" / "semantic_ids.json", None, interactions)
    with pytest.raises(ValueError, match="no items yet"):
        LCRec(pretrained_path=tiny).prompts(HISTORIES)


def test_seed_style_api_generates_only_catalogue_items(tiny, ml100k):
    """The seed's API: a model, its codebook tokens, then HF-style ``generate`` returning only items."""
    interactions, _ = ml100k
    model = LCRec(pretrained_path=tiny)
    table = model.add_codebook_tokens(num_codebooks=5, codebook_size=256)
    assert table.shape == (5, 256) and len(np.unique(table)) == 5 * 256
    rng = np.random.default_rng(4)
    codes = np.unique(rng.integers(0, 256, size=(3 * interactions.num_items, 5)), axis=0)
    codes = codes[rng.permutation(len(codes))[: interactions.num_items]]
    model.attach(SemanticIDs.from_codes(codes, [256] * 5, interactions))
    prompt = model.tokenizer(["Recommend a film."], return_tensors="pt")
    items, scores = model.generate(input_ids=prompt["input_ids"], max_new_tokens=6, num_beams=4)
    assert items.shape == (1, 4) and ((items >= 1) & (items <= interactions.num_items)).all()
    assert len(set(items[0].tolist())) == 4 and torch.isfinite(scores).all()
    with pytest.raises(ValueError, match="cannot spell an item"):
        model.generate(input_ids=prompt["input_ids"], max_new_tokens=3, num_beams=4)


def test_a_saved_full_model_brings_its_codebook_tokens(model, tmp_path, semantic_ids):
    model.save_pretrained(tmp_path / "saved")
    again = LCRec(pretrained_path=str(tmp_path / "saved" / "llm"))
    assert again.codebook_sizes == SIZES and again.settings["code_token_start"] == model.settings["code_token_start"]
    wrong = SemanticIDs(semantic_ids.codes, [8, 8, 64], semantic_ids.dataset, semantic_ids.fingerprint,
                        semantic_ids.item_ids)
    with pytest.raises(ValueError, match="vocabulary disagrees"):
        again.attach(wrong)


def test_list_health():
    lists = [torch.tensor([[3, 1, 2], [4, 4, -1]]), torch.tensor([[5, 6, 7]])]
    health = list_health(lists)
    assert health == {"valid_item_rate": 8 / 9, "duplicate_rate": 1 / 9}
    assert list_health([]) == {"valid_item_rate": 0.0, "duplicate_rate": 0.0}


@pytest.mark.slow
def test_short_real_run_builds_semantic_ids_and_evaluates(tiny, tmp_path):
    """The one-command pipeline on real ml-100k: builds missing semantic IDs, trains, evaluates, saves."""
    ids = tmp_path / "rqvae" / "semantic_ids.json"
    rqvae = tmp_path / "rqvae_short.gin"
    rqvae.write_text('include "config/rqvae/ml100k_debug.gin"\nfit.max_epochs = 6\nfit.eval_every_epochs = 3\n')
    bindings = [f"LCRec.pretrained_path = '{tiny}'", f"train_lcrec.semantic_ids = '{ids}'",
                f"train_lcrec.rqvae_config = '{rqvae}'", "train_lcrec.lora = True", "experiment.eval_rows = 20",
                "fit.max_steps = 4", "fit.batch_size = 4", "TaskData.max_seqrec_examples = 200"]
    command = [sys.executable, "genrec/trainers/lcrec_trainer.py", "config/lcrec/ml100k/lcrec_debug.gin",
               "--run-dir", str(tmp_path / "run")] + [a for b in bindings for a in ("--gin", b)]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert ids.is_file() and "building it with" in proc.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for which in ("valid", "test"):
        assert metrics[which]["valid_item_rate"] == 1.0 and metrics[which]["duplicate_rate"] == 0.0
        assert 0.0 <= metrics[which]["ndcg@10"] <= 1.0
    assert metrics["eval_rows"] == {"valid": 20, "test": 20} and metrics["task_examples"]["seqrec"] == 200
    assert metrics["codebook_sizes"] == json.loads(ids.read_text())["codebook_sizes"]
    work, speed = metrics["work_per_epoch"], metrics["throughput"]
    assert work["tokens"] > 0 and work["model_flops"] > 6 * metrics["trainable_parameters"]
    assert speed["tokens_per_second"] > 0 and 0 < speed["mfu"] < 1 and speed["peak_dtype"] == "fp32"
    loaded = LCRec.from_pretrained(tmp_path / "run" / "model")
    assert loaded.settings["lora"]["r"] == 8 and len(loaded.recommend([["50", "172"]], k=3)[0]) == 3
