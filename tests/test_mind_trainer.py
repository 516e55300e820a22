"""MIND through configs: the ``mind:`` dataset scheme, impression training and evaluation in the content
trainer on a generated MIND-small-shaped folder, the presets, and the ``experiment.item_text`` switch."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

from genrec.config import ConfigError, parse_gin, run
from genrec.data import SPLITS, DatasetFileError, load_dataset
from genrec.data.mind_small import (IMPRESSION_SPLIT, ImpressionExamples, impression_split, mind_folder,
                                    read_mind_small)
from genrec.evaluation.impression_protocol import ImpressionEvaluator
from genrec.models.content import ContentRecommender
from genrec.trainers.content_trainer import train_content
from genrec.training import experiment

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted((REPO / "config" / "content" / "mind").glob("*.gin"))
TOPICS = {"sports": ["golf", "nfl", "tennis"], "finance": ["markets", "economy"], "lifestyle": ["food", "travel"],
          "news": ["world", "politics"]}
WORDS = ["storm", "election", "recipe", "match", "stocks", "beach", "team", "vote", "rally", "coach", "chef", "trip"]


def write_mind(folder: Path, seed: int = 0, news: int = 40, train_impressions: int = 36,
               dev_impressions: int = 16) -> Path:
    """A MIND-small-shaped folder (train/ and dev/, each news.tsv + behaviors.tsv as Microsoft ships
    them): ``news`` news over 4 categories, 12 users whose clicks follow their favourite category,
    train impressions over 3 days (11/12-11/14/2019), dev impressions on 11/15."""
    rng = np.random.default_rng(seed)
    categories = list(TOPICS)
    rows, category_of = [], {}
    for n in range(1, news + 1):
        category = categories[n % len(categories)]
        sub = TOPICS[category][n % len(TOPICS[category])]
        title = " ".join(rng.choice(WORDS, 3)).capitalize() + f" {category} {n}"
        abstract = "" if n % 5 == 0 else f"About {sub} and {rng.choice(WORDS)}."
        entities = '[{"Label": "X", "Type": "O"}]' if n % 7 == 0 else "[]"
        rows.append(f"N{n}\t{category}\t{sub}\t{title}\t{abstract}\thttps://assets.msn.com/N{n}\t{entities}\t[]")
        category_of[f"N{n}"] = category
    ids = list(category_of)
    users = {f"U{u}": categories[u % len(categories)] for u in range(12)}
    histories = {user: [i for i in rng.choice(ids, int(rng.integers(0, 5)), replace=False)
                        if category_of[i] == liked or rng.random() < 0.3] for user, liked in users.items()}
    histories["U0"] = []  # a cold user: empty history

    def behaviors(count: int, start: datetime, days: int, first_id: int) -> list[str]:
        lines = []
        for k in range(count):
            user = f"U{k % len(users)}"
            shown = rng.choice(ids, int(rng.integers(3, 8)), replace=False)
            labels = [int(category_of[i] == users[user] and rng.random() < 0.8) for i in shown]
            if not any(labels):
                labels[0] = 1
            if k == 3:
                labels = [1] * len(labels)  # every candidate clicked: no impression negatives
            when = start + timedelta(days=k % days, hours=int(rng.integers(0, 23)), seconds=int(rng.integers(0, 59)))
            stamp = f"{when.month}/{when.day}/{when.year} {when.strftime('%I:%M:%S %p').lstrip('0')}"
            lines.append(f"{first_id + k}\t{user}\t{stamp}\t{' '.join(histories[user])}\t"
                         + " ".join(f"{i}-{y}" for i, y in zip(shown, labels)))
        return lines

    half = len(rows) * 3 // 4
    splits = {"train": (rows[:half + 4], behaviors(train_impressions, datetime(2019, 11, 12), 3, 1)),
              "dev": (rows[half - 4:], behaviors(dev_impressions, datetime(2019, 11, 15), 1, 1000))}
    for split, (news_rows, behavior_rows) in splits.items():
        (folder / split).mkdir(parents=True, exist_ok=True)
        (folder / split / "news.tsv").write_text("\n".join(news_rows) + "\n", encoding="utf-8")
        (folder / split / "behaviors.tsv").write_text("\n".join(behavior_rows) + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def mind(tmp_path):
    return write_mind(tmp_path / "MINDsmall")


SHORT = ["fit.max_steps = 6", "fit.batch_size = 8", "fit.eval_every_steps = 3", "fit.eval_every_epochs = 1000",
         "ContentRecommender.dim = 16", "ContentRecommender.max_history = 5", "AttentionContent.max_tokens = 16"]


# ------------------------------------------------------------------------------------------ data


def test_scheme_reads_click_sequences_and_folder_names(mind, tmp_path):
    interactions, catalog = load_dataset(f"mind:{mind}")
    assert interactions.name == "mind-MINDsmall" and catalog.item_ids == interactions.item_ids
    assert list(catalog.fields) == ["title", "category", "subcategory", "abstract"]
    assert "Category:" in catalog.text(1)
    first = interactions.sequences[interactions.user_index("U1")]
    assert len(first) >= 1 and all(np.diff(interactions.timestamps[interactions.user_index("U1")]) >= 0)
    assert mind_folder("MINDsmall", tmp_path) == tmp_path / "raw" / "mind" / "MINDsmall"
    assert mind_folder(str(mind), tmp_path) == mind
    renamed = tmp_path / "renamed"
    (renamed).mkdir()
    (mind / "train").rename(renamed / "MINDsmall_train")  # the archives' own folder names work too
    (mind / "dev").rename(renamed / "MINDsmall_dev")
    assert read_mind_small(renamed).news.num_news == 40


def test_missing_files_give_one_clear_line(tmp_path):
    with pytest.raises(DatasetFileError) as error:
        load_dataset(f"mind:{tmp_path / 'nothing'}")
    message = str(error.value)
    assert "\n" not in message and "https://msnews.github.io" in message
    for name in ("train/news.tsv", "train/behaviors.tsv", "dev/news.tsv", "dev/behaviors.tsv"):
        assert name in message
    parse_gin([], [f"experiment.dataset = 'mind:{tmp_path / 'nothing'}'", "experiment.split = 'impressions'"])
    with pytest.raises(DatasetFileError, match="MINDsmall_train.zip and MINDsmall_dev.zip"):
        experiment(scores_impressions=True)


def test_impression_split_holds_out_the_last_train_day(mind):
    data = read_mind_small(mind)
    train, valid, test = impression_split(data, max_history=3)
    days = {str(t)[:10] for t in data.train.times}
    assert days == {"2019-11-12", "2019-11-13", "2019-11-14"}
    assert len(train) + len(valid) == data.train.num_impressions and len(test) == data.dev.num_impressions
    assert set(valid.impression_ids) == {data.train.impression_ids[i] for i, t in enumerate(data.train.times)
                                         if str(t).startswith("2019-11-14")}
    assert max(len(h) for h in train.histories) <= 3
    parse_gin([], [f"experiment.dataset = 'mind:{mind}'", "experiment.split = 'impressions'"])
    with pytest.raises(ValueError, match="only the content trainer"):
        experiment()  # a trainer that cannot score impressions
    parse_gin([], ["experiment.dataset = 'ml-100k'", "experiment.split = 'impressions'"])
    with pytest.raises(ValueError, match="needs experiment.dataset = 'mind:<folder>'"):
        experiment(scores_impressions=True)


def test_examples_and_impression_negatives(mind):
    train, _, _ = impression_split(read_mind_small(mind))
    examples = ImpressionExamples(train, max_history=4)
    assert len(examples) == sum(int(y.sum()) for y in train.labels)
    batch = examples.__getitems__(list(range(len(examples))))
    assert batch["history"].shape == (len(examples), 4)
    torch.manual_seed(0)
    model = ContentRecommender(read_mind_small(mind).news.catalog.texts(), item_encoder="cnn", user_encoder="mean",
                               dim=8, num_negatives=4)
    negatives = model.impression_negatives(batch["target"], batch["negative_pool"])
    for row in range(len(examples)):
        pool = set(batch["negative_pool"][row].tolist()) - {0}
        drawn = negatives[row].tolist()
        if len(pool) >= 4:
            assert len(set(drawn)) == 4 and set(drawn) <= pool  # distinct, from the same impression
        elif pool:
            assert set(drawn) == pool  # all of a small pool, then repeats from it
        else:
            assert all(1 <= n <= model.num_items and n != batch["target"][row] for n in drawn)
    assert any(not (set(p.tolist()) - {0}) for p in batch["negative_pool"])  # the all-clicked impression
    scores, loss = model(**batch)
    assert scores.shape == (len(examples), 5) and torch.isfinite(loss)


def test_score_candidates_matches_the_uncached_path_and_empty_histories(mind):
    data = read_mind_small(mind)
    torch.manual_seed(0)
    model = ContentRecommender(data.news.catalog.texts(), item_encoder="attention", user_encoder="gru", dim=8).eval()
    histories, candidates = [np.array([1, 2]), np.array([], dtype=np.int64)], [np.array([3, 4, 5]), np.array([6])]
    cached = model.score_candidates(histories, candidates)
    assert cached.shape == (2, 3) and torch.isinf(cached[1, 1:]).all() and torch.isfinite(cached[1, 0])
    model.eval_cache = False
    assert torch.allclose(model.score_candidates(histories, candidates), cached, atol=1e-5)
    evaluator = ImpressionEvaluator(impression_split(data)[2], batch_size=3)
    result = evaluator(model.score_candidates)
    assert {"auc", "mrr", "ndcg@5", "ndcg@10", "gauc"} <= set(result) and result["impressions"] == len(evaluator)


# ------------------------------------------------------------------------------------------ trainer


def test_nrms_preset_trains_on_mind_and_reports_impression_metrics(mind, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    argv = ["config/content/mind/nrms_debug.gin", "--run-dir", str(tmp_path / "run"),
            "--gin", f"experiment.dataset = 'mind:{mind}'"]
    metrics = run(train_content, [*SPLITS, IMPRESSION_SPLIT], argv + [a for b in SHORT for a in ("--gin", b)])
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["split"] == "impressions" and saved["protocol"] == "impressions" and saved["steps"] == 6
    for which in ("valid", "test"):
        assert {"auc", "mrr", "ndcg@5", "ndcg@10", "gauc"} <= set(saved[which])
        assert 0 <= saved[which]["auc"] <= 1 and 0 < saved[which]["mrr"] <= 1
    assert saved["test"]["impressions"] == 16 and saved["impressions"]["test"] == 16
    assert saved["num_items"] == 40 and saved["training_examples"] > 0
    assert metrics["test"] == saved["test"]
    loaded = ContentRecommender.from_pretrained(tmp_path / "run" / "model")
    assert loaded.item_ids[1] == "N1" and loaded.num_items == 40


@pytest.mark.parametrize("preset", ["naml_debug", "lstur_debug"])
def test_naml_and_lstur_presets_run(preset, mind, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    argv = [f"config/content/mind/{preset}.gin", "--run-dir", str(tmp_path / "run"),
            "--gin", f"experiment.dataset = 'mind:{mind}'", "--gin", "CNNContent.max_tokens = 16"]
    short = [b for b in SHORT if not b.startswith("AttentionContent")]
    metrics = run(train_content, [*SPLITS, IMPRESSION_SPLIT], argv + [a for b in short for a in ("--gin", b)])
    assert 0 <= metrics["test"]["auc"] <= 1 and metrics["test"]["gauc_users"] >= 1


def test_every_mind_preset_parses(monkeypatch):
    monkeypatch.chdir(REPO)
    assert {p.stem for p in PRESETS} == {"nrms", "naml", "lstur", "nrms_debug", "naml_debug", "lstur_debug"}
    for preset in PRESETS:
        parse_gin([preset])
    with pytest.raises(ConfigError):
        parse_gin([PRESETS[0]], ["experiment.item_txt = 'original'"])


def test_missing_default_folder_is_one_line_from_the_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GENREC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit):
        run(train_content, [*SPLITS, IMPRESSION_SPLIT], ["config/content/mind/nrms.gin", "--run-dir",
                                                         str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert f"{tmp_path / 'data' / 'raw' / 'mind' / 'MINDsmall'}" in err and "https://msnews.github.io" in err
    assert "Traceback" not in err


# ------------------------------------------------------------------------------------------ item text


def write_descriptions(path: Path, catalog, items: range) -> Path:
    lines = [json.dumps({"item": catalog.item_ids[i], "text": catalog.text(i),
                         "description": f"A story for readers of item {i}.", "finished": True}) for i in items]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_item_text_switch_adds_cached_descriptions(mind, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    catalog = read_mind_small(mind).news.catalog
    cache = write_descriptions(tmp_path / "descriptions.jsonl", catalog, range(1, 41))
    base = [f"experiment.dataset = 'mind:{mind}'", "experiment.split = 'impressions'"]
    parse_gin([], base + [f"experiment.item_text = 'augmented:{cache}'"])
    exp = experiment(scores_impressions=True)
    assert exp.catalog.text(3).endswith("Description: A story for readers of item 3.")
    assert exp.info["item_text"] == f"augmented:{cache}" and exp.info["items_described"] == 40
    partial = write_descriptions(tmp_path / "partial.jsonl", catalog, range(1, 11))
    parse_gin([], base + [f"experiment.item_text = 'augmented:{partial}'"])
    with pytest.raises(ValueError, match="30 of 40 items have no description.*missing_descriptions = 'empty'"):
        experiment(scores_impressions=True)
    parse_gin([], base + [f"experiment.item_text = 'augmented:{partial}'", "experiment.missing_descriptions = 'empty'"])
    exp = experiment(scores_impressions=True)
    assert "Description:" in exp.catalog.text(2) and "Description:" not in exp.catalog.text(12)
    parse_gin([], base + [f"experiment.item_text = 'augmented:{tmp_path / 'none.jsonl'}'"])
    with pytest.raises(FileNotFoundError, match="python -m genrec.augment --dataset mind:"):
        experiment(scores_impressions=True)
    parse_gin([], base + ["experiment.item_text = 'llm'"])
    with pytest.raises(ValueError, match="'original', 'augmented'"):
        experiment(scores_impressions=True)


def test_item_text_switch_on_a_content_preset_trains(mind, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    catalog = read_mind_small(mind).news.catalog
    cache = write_descriptions(tmp_path / "descriptions.jsonl", catalog, range(1, 41))
    argv = ["config/content/mind/nrms_debug.gin", "--run-dir", str(tmp_path / "run"),
            "--gin", f"experiment.dataset = 'mind:{mind}'", "--gin", f"experiment.item_text = 'augmented:{cache}'"]
    run(train_content, [*SPLITS, IMPRESSION_SPLIT], argv + [a for b in SHORT for a in ("--gin", b)])
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["item_text"] == f"augmented:{cache}" and saved["items_described"] == 40
    loaded = ContentRecommender.from_pretrained(tmp_path / "run" / "model")
    assert loaded.texts[0].endswith("Description: A story for readers of item 1.")


def test_item_text_augmented_alone_reads_the_default_cache_of_the_dataset(mind, tmp_path, monkeypatch):
    import genrec.augment

    cache = write_descriptions(tmp_path / "default.jsonl", read_mind_small(mind).news.catalog, range(1, 41))
    asked = []
    monkeypatch.setattr(genrec.augment, "cache_path", lambda dataset: asked.append(dataset) or cache)
    parse_gin([], [f"experiment.dataset = 'mind:{mind}'", "experiment.split = 'impressions'",
                   "experiment.item_text = 'augmented'"])
    exp = experiment(scores_impressions=True)
    assert asked == [f"mind:{mind}"] and exp.info["descriptions"] == str(cache)
    assert "Description:" in exp.catalog.text(40)


def test_augment_describes_every_news_of_a_mind_folder(mind):
    from genrec.augment import noun_of
    from genrec.data import load_catalog

    clicked = load_dataset(f"mind:{mind}")[1]
    every = load_catalog(f"mind:{mind}")
    assert every.item_ids == read_mind_small(mind).news.catalog.item_ids and every.num_items == 40
    assert set(clicked.item_ids) < set(every.item_ids)  # some news were shown, never clicked
    assert (noun_of(f"mind:{mind}"), noun_of("ml-100k"), noun_of("amazon:beauty")) == ("news article", "movie", "item")
