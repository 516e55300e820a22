"""Content-based models: operator shapes, the evaluation cache, the LM layer cache, every ml-100k preset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from genrec.config import ConfigError, parse_gin, run
from genrec.data import SPLITS
from genrec.data.windows import history_examples
from genrec.models.content import (BEHAVIOR_OPERATORS, CONTENT_OPERATORS, PREDICTORS, ContentRecommender,
                                   PretrainedLMContent, layer_cache_key)
from genrec.trainers.content_trainer import train_content

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted((REPO / "config" / "content" / "ml100k").glob("*.gin"))
TEXTS = ["Toy Story (1995). Genres: Animation, Children's, Comedy.", "GoldenEye (1995). Genres: Action, Thriller.",
         "Four Rooms (1995). Genres: Thriller.", "Get Shorty (1995). Genres: Action, Comedy, Drama.",
         "Copycat (1995). Genres: Crime, Drama, Thriller.", "Twelve Monkeys (1995). Genres: Drama, Sci-Fi.",
         "Babe (1995). Genres: Children's, Comedy, Drama.", "Dead Man Walking (1995). Genres: Drama.",
         "Richard III (1995). Genres: Drama, War.", "Seven (Se7en) (1995). Genres: Crime, Thriller."]
HISTORIES = [np.array([1, 2, 3]), np.array([4]), np.array([5, 6, 7, 8, 9, 10, 1]), np.array([2, 9])]


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    from genrec.llm.pretrained import tiny_causal_lm

    return str(tiny_causal_lm(tmp_path_factory.mktemp("tiny_llama") / "model", "llama"))


def _model(**kwargs) -> ContentRecommender:
    torch.manual_seed(0)
    defaults = dict(item_encoder="cnn", user_encoder="mean", predictor="dot", dim=16, max_history=5)
    return ContentRecommender(TEXTS, **{**defaults, **kwargs})


def _batch():
    examples = history_examples([np.array([1, 2, 3, 4, 5]), np.array([6, 7, 8])], max_history=3)
    return examples.__getitems__(list(range(len(examples))))


# ---------------------------------------------------------------- operators


def test_follows_the_recommender_contract():
    model = _model().eval()
    model.set_item_ids(["[PAD]"] + [f"i{i}" for i in range(1, len(TEXTS) + 1)])
    scores = model.score(HISTORIES, users=np.arange(len(HISTORIES)))  # users are ignored
    assert scores.dtype == torch.float32 and scores.shape == (len(HISTORIES), len(TEXTS) + 1)
    assert torch.isinf(scores[:, 0]).all() and torch.equal(model.score(HISTORIES), scores)
    lists = model.recommend([["i1", "i2"]], k=3)
    assert len(lists[0]) == 3 and all(item.startswith("i") for item, _ in lists[0])


@pytest.mark.parametrize("name", ["cnn", "attention", "fastformer"])
def test_content_operator_shapes(name):
    torch.manual_seed(0)
    op = CONTENT_OPERATORS[name](texts=TEXTS, dim=16)
    out = op(torch.tensor([1, 5, 10, 5]))
    assert out.shape == (4, 16) and torch.isfinite(out).all()
    assert torch.allclose(op.eval()(torch.tensor([5])), op(torch.tensor([1, 5]))[1], atol=1e-6)
    assert op.vocab_size < 100 and op.embedding.num_embeddings == op.vocab_size + 1  # compacted vocabulary


@pytest.mark.parametrize("name", sorted(BEHAVIOR_OPERATORS))
def test_behavior_operator_shapes_and_padding(name):
    torch.manual_seed(0)
    op = BEHAVIOR_OPERATORS[name](dim=16).eval()
    history = torch.randn(3, 5, 16)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    out = op(history, mask)
    assert out.shape == (3, 16) and torch.isfinite(out).all()
    noisy = history.clone()
    noisy[~mask] = 100.0  # padded positions must not matter
    assert torch.allclose(op(noisy, mask), out, atol=1e-5)


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_predictor_shapes_and_full_ranking_agree(name):
    torch.manual_seed(0)
    op = PREDICTORS[name](dim=16).eval()
    op.pairs_per_chunk = 7  # several chunks in score_all
    user, items = torch.randn(3, 16), torch.randn(11, 16)
    history, mask = torch.randn(3, 4, 16), torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    scores = op(user, items[:5].expand(3, -1, -1), history, mask)
    assert scores.shape == (3, 5)
    full = op.score_all(user, items, history, mask)
    assert full.shape == (3, 11) and torch.allclose(full[:, :5], scores, atol=1e-5)


def test_unknown_operator_names_list_known_ones():
    with pytest.raises(ValueError, match="known names: cnn, attention, fastformer, lm"):
        _model(item_encoder="bert")
    with pytest.raises(ValueError, match="additive, gru, transformer, fastformer, mean"):
        _model(user_encoder="lstm")
    with pytest.raises(ValueError, match="dot, dcn, deepfm, din"):
        _model(predictor="mlp")
    with pytest.raises(ValueError, match="softmax"):
        _model(loss="bpr")


@pytest.mark.parametrize("loss", ["softmax", "bce"])
def test_training_step_reaches_the_text_encoder(loss):
    model = _model(loss=loss, predictor="din" if loss == "bce" else "dot", user_encoder="gru")
    scores, value = model(**_batch())
    assert scores.shape == (6, 1 + model.num_negatives) and value.ndim == 0 and torch.isfinite(value)
    value.backward()
    assert model.item_encoder.embedding.weight.grad.abs().sum() > 0  # joint, end-to-end training
    negatives = model.sample_negatives(torch.arange(1, 11).repeat(50))
    assert ((negatives >= 1) & (negatives <= 10)).all()
    assert not (negatives == torch.arange(1, 11).repeat(50)[:, None]).any()


# ---------------------------------------------------------------- evaluation cache


@pytest.mark.parametrize("predictor", ["dot", "din"])
def test_cache_scores_equal_uncached_and_follow_training(predictor):
    model = _model(item_encoder="attention", user_encoder="transformer", predictor=predictor).eval()
    cached = model.score(HISTORIES)
    assert model.table_builds == 1 and torch.isinf(cached[:, 0]).all()
    assert torch.equal(model.score(HISTORIES), cached) and model.table_builds == 1  # reused, not recomputed
    model.eval_cache = False
    uncached = model.score(HISTORIES)
    model.eval_cache = True
    assert torch.allclose(cached, uncached, atol=1e-5)
    assert torch.equal(cached.argsort(dim=1, stable=True), uncached.argsort(dim=1, stable=True))

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _, loss = model(**_batch())
    loss.backward()
    optimizer.step()
    model.eval()
    after = model.score(HISTORIES)
    assert model.table_builds == 2 and not torch.allclose(after, cached)
    model.eval_cache = False
    assert torch.allclose(model.score(HISTORIES), after, atol=1e-5)  # never stale


def test_cache_invalidated_by_load_state_dict_and_in_place_updates():
    model = _model().eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    first = model.score(HISTORIES)
    with torch.no_grad():
        model.item_encoder.conv.weight.mul_(2.0)  # any in-place update bumps the version counter
    assert not torch.allclose(model.score(HISTORIES), first) and model.table_builds == 2
    model.load_state_dict(state)
    assert torch.allclose(model.score(HISTORIES), first, atol=1e-6) and model.table_builds == 3
    model.item_encoder.conv.weight.data.mul_(3.0)  # .data bypasses version counters: invalidate by hand
    model.invalidate_cache()
    assert not torch.allclose(model.score(HISTORIES), first) and model.table_builds == 4


# ---------------------------------------------------------------- language-model operator


def test_lm_operator_layer_cache_matches_recomputation(tiny_llama, tmp_path):
    torch.manual_seed(0)
    op = PretrainedLMContent(TEXTS, dim=8, path=tiny_llama, frozen_layers=1, cache_dir=str(tmp_path))
    assert op.cache_path.is_file() and op.cache_path.parent == tmp_path
    assert np.load(op.cache_path).shape == (11, op.token_ids.shape[1], 64)
    trainable = [name for name, p in op.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name or name.startswith("proj.") for name in trainable)
    assert not any(name.startswith("lower.") for name in trainable)
    op.eval()
    items = torch.tensor([3, 1, 10])
    cached = op(items)
    op.layer_cache = False
    assert torch.allclose(op(items), cached, atol=1e-5)
    op.layer_cache = True
    op.train()
    op(items).sum().backward()  # gradients reach the LoRA adapters of the top layer
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in op.named_parameters() if "lora_" in n)
    # Same (model, layer, texts): the file is reused; another layer or text: another key.
    again = PretrainedLMContent(TEXTS, dim=8, path=tiny_llama, frozen_layers=1, cache_dir=str(tmp_path))
    assert again.cache_path == op.cache_path
    ids, mask = op.token_ids, op.token_mask
    assert layer_cache_key(tiny_llama, 0, TEXTS, ids, mask) != layer_cache_key(tiny_llama, 1, TEXTS, ids, mask)
    changed = TEXTS[:-1] + ["Seven (1995). Genres: Crime."]
    assert layer_cache_key(tiny_llama, 1, changed, ids, mask) != layer_cache_key(tiny_llama, 1, TEXTS, ids, mask)


def test_lm_operator_full_tuning_and_errors(tiny_llama, tmp_path):
    op = PretrainedLMContent(TEXTS, dim=8, path=tiny_llama, frozen_layers=0, lora=None, layer_cache=False)
    trainable = {name.split(".")[0] for name, p in op.named_parameters() if p.requires_grad}
    assert trainable == {"backbone", "proj"}
    assert not op.backbone.embed_tokens.weight.requires_grad
    assert op(torch.tensor([1, 2])).shape == (2, 8)
    with pytest.raises(ValueError, match="leaves no layer to train"):
        PretrainedLMContent(TEXTS, dim=8, path=tiny_llama, frozen_layers=2, layer_cache=False)


def test_minilm_operator_cached_equals_uncached(tmp_path):
    """The bundled MiniLM sentence encoder, bottom 5 of 6 layers frozen and cached, LoRA on the top one."""
    torch.manual_seed(0)
    model = ContentRecommender(TEXTS, item_encoder=lambda texts, dim: PretrainedLMContent(
        texts, dim, frozen_layers=-1, cache_dir=str(tmp_path)), user_encoder="transformer", dim=16).eval()
    cached = model.score(HISTORIES)
    model.eval_cache = False
    assert torch.allclose(model.score(HISTORIES), cached, atol=1e-4)


# ---------------------------------------------------------------- presets


def test_every_preset_parses(monkeypatch):
    monkeypatch.chdir(REPO)
    assert {p.stem for p in PRESETS} >= {"nrms", "nrms_debug", "naml", "lstur", "deepfm", "dcn", "din", "llm_nrms"}
    for preset in PRESETS:
        parse_gin([preset])
    with pytest.raises(ConfigError):
        parse_gin([PRESETS[0]], ["ContentRecommender.dimm = 3"])


@pytest.mark.slow
@pytest.mark.parametrize("preset", [p.stem for p in PRESETS if p.stem != "llm_nrms_smollm2"])
def test_every_preset_runs_a_few_steps(preset, tmp_path, tiny_llama, monkeypatch):
    layer_cache = Path(tiny_llama).parent / "layer_cache"  # shared: the second LM preset reuses the first's
    monkeypatch.chdir(REPO)
    short = ["fit.max_steps = 2", "fit.batch_size = 8", "fit.eval_every_epochs = 1000", "fit.eval_every_steps = None",
             "experiment.eval_rows = 16", "ContentRecommender.dim = 16", "ContentRecommender.max_history = 10",
             "ContentRecommender.encode_batch_size = 1024"]
    if preset.startswith("llm_nrms"):  # the preset's wiring with a tiny Llama instead of MiniLM (speed)
        short += [f"PretrainedLMContent.path = {tiny_llama!r}", f"PretrainedLMContent.cache_dir = {str(layer_cache)!r}"]
    argv = [f"config/content/ml100k/{preset}.gin", "--run-dir", str(tmp_path / "run")]
    metrics = run(train_content, list(SPLITS), argv + [arg for binding in short for arg in ("--gin", binding)])
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["steps"] == 2 and saved["dataset"] == "ml-100k" and saved["mask_history"] is True
    assert saved["eval_rows"] == {"valid": 16, "test": 16} and 0 <= metrics["test"]["ndcg@10"] <= 1
    assert (tmp_path / "run" / "model" / "content.safetensors").is_file()  # served by ContentRecommender.from_pretrained


def test_save_and_load_rebuild_the_operators_from_the_saved_config(tmp_path):
    import gin

    parse_gin([], ["ContentRecommender.item_encoder = @AttentionContent", "AttentionContent.heads = 2",
                   "AttentionContent.layers = 2", "ContentRecommender.user_encoder = 'gru'",
                   "ContentRecommender.dim = 16"])
    torch.manual_seed(0)
    model = ContentRecommender(TEXTS).eval()
    with pytest.raises(ValueError, match="set_item_ids"):
        model.save_pretrained(tmp_path / "model")
    model.set_item_ids(["[PAD]"] + [f"i{i}" for i in range(1, len(TEXTS) + 1)])
    model.save_pretrained(tmp_path / "model")
    parse_gin([], ["ContentRecommender.dim = 8"])  # the caller's configuration neither leaks in nor is lost
    loaded = ContentRecommender.from_pretrained(tmp_path / "model")
    assert gin.query_parameter("ContentRecommender.dim") == 8
    assert not loaded.training and loaded.item_ids == model.item_ids and loaded.texts == TEXTS
    assert loaded.settings == model.settings and model.settings["item_encoder"] == "attention"
    assert torch.equal(loaded.score(HISTORIES), model.score(HISTORIES))
    with pytest.raises(FileNotFoundError, match="not a saved ContentRecommender"):
        ContentRecommender.from_pretrained(tmp_path / "nothing")
    explicit = _model(item_encoder="fastformer", user_encoder="gru", predictor="din")  # arguments, not gin
    explicit.set_item_ids(model.item_ids)
    explicit.save_pretrained(tmp_path / "explicit")
    assert torch.equal(ContentRecommender.from_pretrained(tmp_path / "explicit").score(HISTORIES),
                       explicit.eval().score(HISTORIES))
