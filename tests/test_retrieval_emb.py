"""RecLM-emb: query generation, the InfoNCE bi-encoder, its evaluation, the trainer and the CLI, with a
tiny random BERT (tokenizer of the bundled MiniLM)."""

import random

import numpy as np
import pytest
import torch

from genrec.config import parse_gin
from genrec.data import load_dataset
from genrec.retrieval.batches import QueryCollator, QueryDataset
from genrec.retrieval.encoder import RetrievalEncoder
from genrec.retrieval.evaluate import evaluate_queries, random_hit
from genrec.retrieval.index import InnerProductIndex
from genrec.retrieval.queries import QUERY_TYPES, Query, QueryGenerator, misspell


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    from transformers import AutoTokenizer, BertConfig, BertModel

    from genrec.llm.pretrained import resolve_llm

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_llm("bundled:all-minilm-l6-v2"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def ml100k():
    return load_dataset("ml-100k")


def test_queries_hold_out_users_and_items(ml100k):
    interactions, catalog = ml100k
    generator = QueryGenerator(interactions, catalog, seed=0, eval_per_type=50)
    train, test = generator.queries("train"), generator.queries("test")
    assert {q.kind for q in train} == set(QUERY_TYPES) == {q.kind for q in test}
    held_out_items = {i for i in range(1, catalog.num_items + 1) if generator.item_group[i] != "train"}
    assert not any(set(q.answers) & held_out_items for q in train)  # no training query answers a held-out item
    item_kinds = {"i2i", "fa2i", "sa2i", "nm2i", "na2i"}
    assert all(generator.item_group[q.answers[0]] == "test" for q in test if q.kind in item_kinds - {"i2i"})
    for q in train:
        assert len(q.negatives) == 7 and not set(q.negatives) & (set(q.answers) | set(q.exclude))
    for q in test:
        if q.kind in ("uh2i", "uq2i"):
            assert q.answers[0] not in q.exclude and q.exclude  # the history is left out, never the answer
    assert misspell("Toy Story", random.Random(0)) != "Toy Story"


def test_metrics_by_hand():
    items = np.eye(4, dtype=np.float32)  # item i is axis i - 1
    queries = [Query("a", "q1", [2]), Query("a", "q2", [1], exclude=[3]), Query("b", "q3", [4, 1])]
    vectors = np.array([[0, 1, 0, 0], [0, 0.5, 1, 0.1], [0.9, 0, 0, 1]], dtype=np.float32)
    out = evaluate_queries(vectors, queries, items, ks=(1, 2))
    assert out["a/hit@1"] == 0.5  # q1 ranks 2 first; q2 (3 excluded) ranks 2 first, 1 after 4
    assert out["b/recall@1"] == 0.5 and out["b/hit@1"] == 1.0 and out["b/ndcg@2"] == 1.0
    assert random_hit(4, 1, 1) == pytest.approx(0.25) and random_hit(10, 2, 3) == pytest.approx(1 - 56 / 120)


def test_hnsw_index_agrees_with_flat():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(300, 16)).astype(np.float32)
    queries = rng.normal(size=(20, 16)).astype(np.float32)
    flat, _ = InnerProductIndex(vectors).search(queries, 5)
    hnsw, _ = InnerProductIndex(vectors, kind="hnsw").search(queries, 5, exclude=[np.array([1])] * 20)
    assert (hnsw > 0).all() and not (hnsw == 1).any()
    overlap = np.mean([len(set(a) & set(b)) for a, b in zip(flat.tolist(), hnsw.tolist())])
    assert overlap >= 4


def toy_task(seed=0):
    """20 items named by one word; queries name a different, arbitrary word per item (nothing lexical to match)."""
    rng = random.Random(seed)
    words = ["apple", "river", "stone", "cloud", "tiger", "piano", "lemon", "train", "glass", "house", "chair", "storm",
             "bread", "plane", "horse", "music", "paper", "light", "ocean", "sugar", "mouse", "table", "green", "night",
             "money", "water", "earth", "heart", "field", "dream", "smile", "grass", "north", "south", "wheel", "tower",
             "candle", "forest", "silver", "orange"]
    rng.shuffle(words)
    items, asks = words[:20], words[20:40]
    texts = [f"item {w}" for w in items]
    queries = [Query("toy", f"looking for {asks[i]}", [i + 1]) for i in range(20)]
    for q in queries:
        q.negatives = [j for j in rng.sample(range(1, 21), 4) if j != q.answers[0]][:3]
    return texts, queries


def test_info_nce_loss_falls_and_beats_the_frozen_encoder(tiny_encoder, tmp_path):
    from genrec.training import fit

    parse_gin([], [])
    texts, queries = toy_task()
    frozen = RetrievalEncoder(model=tiny_encoder, temperature=0.05, query_max_length=16, passage_max_length=8)

    def hit1(model):
        return evaluate_queries(model.encode([q.text for q in queries], query=True), queries,
                                model.encode(texts), ks=(1,))["toy/hit@1"]

    before = hit1(frozen)
    model = RetrievalEncoder(model=tiny_encoder, temperature=0.05, query_max_length=16, passage_max_length=8)
    evaluate = lambda m, which, acc=None: {"hit@1": hit1(m)}  # noqa: E731
    fit(model, QueryDataset(queries), evaluate, run_dir=tmp_path / "run", info={}, seed=0,
        collate_fn=QueryCollator(model, [""] + texts), batch_size=10, learning_rate=3e-3, max_epochs=40,
        eval_every_epochs=40, metric="hit@1", log_every_steps=2, mixed_precision="no")
    import json
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert losses[-1] < 0.5 * losses[0]
    after = hit1(model)
    assert after >= before + 0.3, (before, after)


def test_duplicate_positive_is_not_a_negative(tiny_encoder):
    model = RetrievalEncoder(model=tiny_encoder)
    queries = [Query("t", "a", [3], negatives=[5]), Query("t", "b", [3], negatives=[3 + 4])]
    batch = QueryCollator(model, [""] + [f"item {i}" for i in range(1, 10)])(queries)
    scores, loss = model(**batch)
    assert torch.isinf(scores[0, 1]) and torch.isinf(scores[1, 0])  # the other query's copy of item 3
    assert torch.isfinite(loss)


def test_trainer_and_cli_on_ml100k(tiny_encoder, tmp_path, capsys):
    from genrec import retrieve
    from genrec.trainers.retrieval_trainer import train_retrieval

    run_dir = tmp_path / "run"
    parse_gin(["config/retrieval/ml100k_debug.gin"], [
        f"train_retrieval.run_dir = {str(run_dir)!r}", f"RetrievalEncoder.model = {tiny_encoder!r}",
        "QueryGenerator.eval_per_type = 20", "QueryGenerator.train_per_user = 1", "fit.max_steps = 3",
        "fit.batch_size = 4", "fit.warmup_steps = 1", "RetrievalEncoder.query_max_length = 32"])
    metrics = train_retrieval()
    for kind in QUERY_TYPES:
        assert 0 <= metrics["test"][f"{kind}/hit@10"] <= 1 and metrics["test"][f"{kind}/queries"] == 20
    assert (run_dir / "model" / "retrieval.json").is_file()
    capsys.readouterr()
    assert retrieve.main(["Toy Stroy", "--model", str(run_dir / "model"), "--k", "3", "--index", "hnsw"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "query: Toy Stroy" and len(lines) == 4
    assert retrieve.main(["x", "--model", str(tmp_path / "missing")]) == 2
    assert "no trained retrieval model" in capsys.readouterr().err
