"""RQ-VAE trainer: short real runs on ml-100k (both collision strategies), the file's fingerprint, shipped configs."""

import json
import subprocess
import sys
from pathlib import Path

import gin
import numpy as np
import pytest

import genrec.trainers.rqvae_trainer  # noqa: F401  (registers train_rqvae for the config test)
from genrec.config import parse_gin
from genrec.data import Interactions, load_dataset
from genrec.semantic_ids import SemanticIDs, SemanticIDsError

REPO = Path(__file__).resolve().parents[1]
TRAINER = [sys.executable, "genrec/trainers/rqvae_trainer.py", "config/rqvae/ml100k_debug.gin"]
ML100K_ITEMS = 1682
EXACT_DUPLICATE_TEXTS = 18  # ml-100k items whose text equals an earlier item's: identical codes guaranteed


def train(run_dir: Path, *bindings: str) -> dict:
    extra = [arg for binding in bindings for arg in ("--gin", binding)]
    proc = subprocess.run(TRAINER + ["--run-dir", str(run_dir), *extra], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def ml100k():
    return load_dataset("ml-100k")[0]


@pytest.fixture(scope="module")
def append_run(tmp_path_factory):
    """20 epochs of 2 batches (the first initialises the codebooks), validation every 10 epochs."""
    run_dir = tmp_path_factory.mktemp("rqvae") / "append"
    return run_dir, train(run_dir, "fit.max_epochs = 20", "fit.eval_every_epochs = 10")


@pytest.mark.slow
def test_short_run_writes_unique_ids_with_an_extra_level(append_run, ml100k):
    run_dir, metrics = append_run
    assert (run_dir / "config.gin").is_file() and metrics["steps"] == 40 and metrics["epochs"] == 20
    assert metrics["dataset"] == "ml-100k" and metrics["fingerprint"] == ml100k.fingerprint()
    test = metrics["test"]
    assert len(test["usage"]) == len(test["perplexity"]) == 3
    assert test["collision_rate"] > 0 and test["max_collision_group"] >= 2  # duplicate texts collide
    assert test["collision_strategy"] == "append_level" and test["collision_rate_resolved"] == 0
    assert test["changed_items"] == 0  # append_level never touches the semantic levels
    assert test["resolved_codebook_sizes"] == [64, 64, 64, test["max_collision_group"]]
    assert test["shared_label_ratio"] > 1  # items on one first code share genres more often than chance

    ids = SemanticIDs.load(run_dir / "semantic_ids.json", ml100k)
    assert ids.num_items == ML100K_ITEMS and ids.num_levels == 4
    assert ids.codebook_sizes == test["resolved_codebook_sizes"]
    assert len(np.unique(ids.codes[1:], axis=0)) == ML100K_ITEMS
    assert ids.codes[1:, 3].max() + 1 == test["max_collision_group"]


@pytest.mark.slow
def test_semantic_ids_refuse_other_interactions(append_run, ml100k):
    run_dir, _ = append_run
    path = run_dir / "semantic_ids.json"
    # same name and item ids as ml-100k, other interactions: the name alone does not make it the same data
    items = ml100k.item_ids[1:]
    other = Interactions.from_log("ml-100k", ["u"] * len(items), items, np.arange(len(items), dtype=np.float64))
    assert other.num_items == ML100K_ITEMS
    with pytest.raises(SemanticIDsError, match=rf"fingerprint {ml100k.fingerprint()}.*"
                                               rf"fingerprint {other.fingerprint()}.*rebuild it"):
        SemanticIDs.load(path, other)


@pytest.mark.slow
def test_sinkhorn_strategy_keeps_three_levels(tmp_path, ml100k):
    # 50 epochs: the largest group sharing the first two codes is ~30 items, within the 64 last-level codes
    # (after 20 epochs it is 171, which the strategy must refuse)
    metrics = train(tmp_path / "sinkhorn", "fit.max_epochs = 50", "fit.eval_every_epochs = 25",
                    "train_rqvae.collision_strategy = 'sinkhorn'")
    test = metrics["test"]
    assert test["collision_strategy"] == "sinkhorn" and test["collision_rate_resolved"] == 0
    assert test["resolved_codebook_sizes"] == [64, 64, 64]
    assert test["changed_items"] >= EXACT_DUPLICATE_TEXTS
    ids = SemanticIDs.load(tmp_path / "sinkhorn" / "semantic_ids.json", ml100k)
    assert ids.num_levels == 3 and ids.codebook_sizes == [64, 64, 64]
    assert len(np.unique(ids.codes[1:], axis=0)) == ML100K_ITEMS


SHIPPED = sorted((REPO / "config" / "rqvae").glob("*.gin"))


@pytest.fixture
def clean_gin(monkeypatch):
    monkeypatch.chdir(REPO)  # include lines are relative to the repository root
    yield
    gin.clear_config()


def test_shipped_configs_are_the_expected_ones():
    assert [path.name for path in SHIPPED] == [
        "amazon.gin",
        "amazon_instruments.gin",
        "ml100k.gin",
        "ml100k_collab.gin",
        "ml100k_debug.gin",
        "ml1m.gin",
    ]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: path.name)
def test_shipped_config_parses(path, clean_gin):
    parse_gin([path.relative_to(REPO)])
    assert gin.query_parameter("train_rqvae.collision_strategy") in ("append_level", "sinkhorn")
    assert gin.query_parameter("fit.mode") == "min" and gin.query_parameter("fit.metric") == "loss"


def test_ml1m_overrides_the_included_recipe(clean_gin):
    parse_gin(["config/rqvae/ml1m.gin"])
    assert gin.query_parameter("experiment.dataset") == "ml-1m"
    assert gin.query_parameter("%CODEBOOK_SIZE") == 256  # the later macro wins over the included 64
    parse_gin(["config/rqvae/ml100k_debug.gin"])
    assert gin.query_parameter("experiment.dataset") == "ml-100k" and gin.query_parameter("%CODEBOOK_SIZE") == 64
    assert gin.query_parameter("fit.max_epochs") == 100


def test_unknown_collision_strategy_fails_before_training(tmp_path):
    proc = subprocess.run(TRAINER + ["--run-dir", str(tmp_path / "run"), "--gin",
                                     "train_rqvae.collision_strategy = 'greedy'"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unknown train_rqvae.collision_strategy 'greedy'" in proc.stderr and "append_level" in proc.stderr
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


def test_collaborative_item_vectors_come_from_a_trained_item_table(tmp_path):
    import torch

    from genrec.semantic_ids.build import item_vectors
    from genrec.training.checkpoint import save_tensors

    interactions, catalog = load_dataset("ml-100k")
    n = interactions.num_items
    table = torch.randn(n + 1, 8, generator=torch.Generator().manual_seed(0))
    (tmp_path / "run").mkdir()
    save_tensors(tmp_path / "run" / "best.safetensors", {"item_emb.weight": table, "pos_emb.weight": table[:5]})
    x = item_vectors(catalog, standardize=False, source=f"collaborative:{tmp_path / 'run'}", interactions=interactions)
    assert torch.equal(x, table[1:])
    both = item_vectors(catalog, standardize=True, source=f"text+collaborative:{tmp_path / 'run'}")
    assert both.shape == (n, 384 + 8) and torch.allclose(both.mean(0), torch.zeros(392), atol=1e-4)
    (tmp_path / "run" / "metrics.json").write_text('{"fingerprint": "another"}')
    with pytest.raises(ValueError, match="trained on other data"):
        item_vectors(catalog, False, f"collaborative:{tmp_path / 'run'}", interactions)
    with pytest.raises(ValueError, match="not found; train the model first"):
        item_vectors(catalog, False, f"collaborative:{tmp_path / 'nothing'}", interactions)
    with pytest.raises(ValueError, match="unknown train_rqvae.item_source part 'cf'"):
        item_vectors(catalog, False, "cf", interactions)
