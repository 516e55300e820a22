"""The seed's ``--split CATEGORY`` convention: command-line rules, ``{split}`` placeholders, the Amazon
configs, the message when the files are absent, and short real runs on a fixture folder shaped like the
Amazon 2014 files (``reviews_<Category>_5.json.gz`` JSON lines, ``meta_<Category>.json.gz`` dict literals)."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import gin
import numpy as np
import pytest

import genrec.trainers.lcrec_trainer  # noqa: F401  (registers the configurables the configs bind)
import genrec.trainers.rqvae_trainer  # noqa: F401
import genrec.trainers.sasrec_trainer  # noqa: F401
import genrec.trainers.tiger_trainer  # noqa: F401
from genrec.config import ConfigError, default_run_dir, isolated_config, parse_args, parse_gin, run
from genrec.data import load_dataset
from genrec.data.amazon import category_file_name, short_name
from genrec.data.readers import DatasetFileError

REPO = Path(__file__).resolve().parents[1]
SPLITS = ["loo", "ratio"]
AMAZON_CONFIGS = ["config/rqvae/amazon.gin", "config/lcrec/amazon/rqvae.gin", "config/lcrec/amazon/rqvae_debug.gin",
                  "config/lcrec/amazon/lcrec.gin", "config/lcrec/amazon/lcrec_debug.gin", "config/tiger/amazon.gin",
                  "config/sasrec/amazon.gin"]
SEED_COMMANDS = [  # the seed's commands, verbatim
    ["genrec/trainers/rqvae_trainer.py", "config/lcrec/amazon/rqvae.gin", "--split", "beauty"],
    ["genrec/trainers/lcrec_trainer.py", "config/lcrec/amazon/lcrec.gin", "--split", "beauty"],
    ["genrec/trainers/lcrec_trainer.py", "config/lcrec/amazon/lcrec_debug.gin"],
]


def write_amazon(folder: Path, category: str = "Beauty", users: int = 30, items: int = 20) -> Path:
    """Review and metadata files of one category, shaped like the 2014 release: every user reviews 6
    items at increasing times; meta lines are Python dict literals with title, brand and categories."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    reviews = []
    for user in range(users):
        for t, item in enumerate(rng.choice(items, 6, replace=False)):
            reviews.append(json.dumps({"reviewerID": f"U{user:03d}", "asin": f"B{item:04d}", "overall": 5.0,
                                       "unixReviewTime": 1_400_000_000 + 86_400 * t, "reviewText": "fine"}))
    meta = [repr({"asin": f"B{item:04d}", "title": f"Product {item}", "brand": f"Brand {item % 3}",
                  "categories": [[category, f"Shelf {item % 4}"]], "salesRank": {category: item}})
            for item in range(items)]
    for name, lines in ((f"reviews_{category}_5.json.gz", reviews), (f"meta_{category}.json.gz", meta)):
        with gzip.open(folder / name, "wt", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def clean_gin(monkeypatch):
    monkeypatch.chdir(REPO)
    yield
    gin.clear_config()


def test_category_names():
    assert short_name("beauty") == short_name("Beauty") == "beauty"
    assert short_name("Musical_Instruments") == "instruments" and category_file_name("sports") == "Sports_and_Outdoors"
    assert short_name("loo") is None and category_file_name("Some_New_Category") == "Some_New_Category"


@pytest.mark.parametrize("argv,eval_split,category", [
    (["--split", "beauty"], None, "beauty"),
    (["--split", "Toys_and_Games"], None, "toys"),
    (["--split", "ratio"], "ratio", None),  # an evaluation split, as before
    (["--eval-split", "ratio", "--split", "sports"], "ratio", "sports"),
    (["--split", "loo", "--eval-split", "loo"], "loo", None),
])
def test_split_is_a_category_or_an_evaluation_split(argv, eval_split, category):
    args = parse_args(["x.gin", *argv], prog="t", splits=SPLITS)
    assert (args.eval_split, args.category) == (eval_split, category)


@pytest.mark.parametrize("argv,message", [
    (["--split", "beuaty"], r"unknown --split 'beuaty'; valid splits are: loo, ratio .*category.*beauty, sports, toys"),
    (["--split", "loo", "--eval-split", "ratio"], "disagree"),
    (["--eval-split", "beauty"], "unknown --eval-split 'beauty'; valid splits are: loo, ratio"),
])
def test_bad_split_arguments(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse_args(["x.gin", *argv], prog="t", splits=SPLITS)


@pytest.mark.parametrize("path", AMAZON_CONFIGS)
def test_amazon_configs_take_the_category(path, clean_gin):
    parse_gin([path])  # the config's default category
    assert gin.query_parameter("experiment.dataset") == "amazon:beauty"
    parse_gin([path], split="toys")
    assert gin.query_parameter("experiment.dataset") == "amazon:toys"
    for key in ("train_lcrec.semantic_ids", "train_tiger.semantic_ids"):
        try:
            assert "/toys/" in gin.query_parameter(key)
        except ValueError:  # not bound by this config
            pass


def test_placeholders_are_filled_in_included_files_and_overrides(clean_gin, tmp_path):
    parse_gin(["config/lcrec/amazon/lcrec_debug.gin"], ['experiment.dataset = "amazon:/data/amazon/{split}"'],
              split="sports")
    assert gin.query_parameter("experiment.dataset") == "amazon:/data/amazon/sports"
    assert gin.query_parameter("train_lcrec.semantic_ids") == "runs/lcrec/amazon/rqvae_debug/sports/semantic_ids.json"
    assert gin.query_parameter("train_lcrec.rqvae_config") == "config/lcrec/amazon/rqvae_debug.gin"
    # the RQ-VAE config that the LC-Rec trainer builds missing semantic IDs with gets its category
    with isolated_config([gin.query_parameter("train_lcrec.rqvae_config")]):
        assert gin.query_parameter("experiment.dataset") == "amazon:sports"
    assert gin.query_parameter("experiment.dataset") == "amazon:/data/amazon/sports"  # restored
    assert "amazon:/data/amazon/sports" in gin.config_str()

    lone = tmp_path / "lone.gin"
    lone.write_text('include "config/sasrec/ml100k.gin"\nexperiment.dataset = "amazon:{split}"\n')
    with pytest.raises(ConfigError, match=r"experiment.dataset = 'amazon:\{split\}' holds the placeholder.*SPLIT"):
        parse_gin([lone])
    with pytest.raises(ConfigError, match="binds no SPLIT macro.*--eval-split"):
        parse_gin(["config/sasrec/ml100k.gin"], split="beauty")


@gin.configurable
def _amazon_entry(run_dir: str = "unset"):
    return {"run_dir": run_dir, "dataset": gin.query_parameter("experiment.dataset"),
            "split": gin.query_parameter("experiment.split")}


def test_run_binds_category_evaluation_split_and_run_folder(clean_gin):
    out = run(_amazon_entry, SPLITS, ["config/sasrec/amazon.gin", "--split", "sports", "--eval-split", "ratio"])
    assert out == {"run_dir": "runs/sasrec/amazon/sports", "dataset": "amazon:sports", "split": "ratio"}
    out = run(_amazon_entry, SPLITS, ["config/sasrec/amazon.gin", "--run-dir", "elsewhere"])
    assert out == {"run_dir": "elsewhere", "dataset": "amazon:beauty", "split": "loo"}
    out = run(_amazon_entry, SPLITS, ["config/sasrec/ml100k.gin", "--split", "ratio"])  # the old meaning stays
    assert out == {"run_dir": "runs/sasrec/ml100k", "dataset": "ml-100k", "split": "ratio"}
    assert default_run_dir("config/lcrec/amazon/rqvae.gin", "beauty") == Path("runs/lcrec/amazon/rqvae/beauty")


def test_amazon_folder_and_category_forms(tmp_path, monkeypatch):
    monkeypatch.delenv("GENREC_AMAZON_DIR", raising=False)
    write_amazon(tmp_path / "raw" / "amazon")
    write_amazon(tmp_path / "raw" / "amazon", category="Toys_and_Games", users=10)
    by_name = load_dataset("amazon:beauty", root=tmp_path)[0]
    in_folder = load_dataset(f"amazon:{tmp_path / 'raw' / 'amazon'}/Beauty")[0]
    assert by_name.name == in_folder.name == "amazon-Beauty" and by_name.num_users == 30
    assert by_name.fingerprint() == in_folder.fingerprint()
    assert load_dataset(f"amazon:{tmp_path / 'raw' / 'amazon'}/toys")[0].num_users == 10
    with pytest.raises(DatasetFileError, match=r"expected one reviews_<Category>_5.json.gz.*amazon:.*/<category>"):
        load_dataset(f"amazon:{tmp_path / 'raw' / 'amazon'}")  # two categories: name one
    message = (r"reviews_Sports_and_Outdoors_5.json.gz: file not found; download https://snap.stanford.edu/\S+/"
               r"reviews_Sports_and_Outdoors_5.json.gz and \S+/meta_Sports_and_Outdoors.json.gz into ")
    with pytest.raises(DatasetFileError, match=message + ".*GENREC_AMAZON_DIR=<folder>"):
        load_dataset("amazon:sports", root=tmp_path)
    write_amazon(tmp_path / "elsewhere", category="Sports_and_Outdoors", users=12)
    monkeypatch.setenv("GENREC_AMAZON_DIR", str(tmp_path / "elsewhere"))  # the user's folder, for every category
    assert load_dataset("amazon:sports", root=tmp_path)[0].num_users == 12
    with pytest.raises(DatasetFileError, match=f"{tmp_path / 'elsewhere' / 'reviews_Beauty_5.json.gz'}: file not"):
        load_dataset("amazon:beauty", root=tmp_path)


def _cli(args, tmp_path, **env):
    base = {key: value for key, value in os.environ.items() if key != "GENREC_AMAZON_DIR"}
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**base, "OMP_NUM_THREADS": "1", **env})


@pytest.mark.parametrize("command", SEED_COMMANDS, ids=lambda command: command[1])
def test_seed_commands_name_the_missing_files(command, tmp_path):
    proc = _cli(command, tmp_path, GENREC_DATA_DIR=str(tmp_path))
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith(f"error: {tmp_path}/raw/amazon/reviews_Beauty_5.json.gz: file not found; download "
                               "https://snap.stanford.edu/data/amazon/productGraph/categoryFiles/reviews_Beauty_5"), lines
    assert "meta_Beauty.json.gz" in lines[0] and len(lines) == 2 and "Traceback" not in proc.stderr, lines


def test_sasrec_and_rqvae_run_on_a_fixture_category(tmp_path):
    """SASRec and LC-Rec's RQ-VAE by the seed's command line, on the fixture folder (tiny settings)."""
    folder = write_amazon(tmp_path / "amazon")
    data = f'experiment.dataset = "amazon:{folder}/{{split}}"'
    proc = _cli(["genrec/trainers/sasrec_trainer.py", "config/sasrec/amazon.gin", "--split", "beauty", "--gin", data,
                 "--gin", "fit.max_epochs = 2", "--run-dir", str(tmp_path / "sasrec"), "--threads", "1"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "sasrec" / "metrics.json").read_text())
    assert metrics["dataset"] == f"amazon:{folder}/beauty" and metrics["split"] == "loo" and metrics["epochs"] == 2
    assert metrics["num_users"] == 30 and metrics["num_items"] == 20

    proc = _cli(["genrec/trainers/rqvae_trainer.py", "config/lcrec/amazon/rqvae.gin", "--split", "beauty",
                 "--gin", "RQVAE.codebook_sizes = [4, 4, 4, 4]", "--gin", "fit.max_epochs = 2",
                 "--gin", "fit.eval_every_epochs = 1", "--run-dir", str(tmp_path / "rqvae"), "--threads", "1"],
                tmp_path, GENREC_AMAZON_DIR=str(folder))  # the folder given once for every config
    assert proc.returncode == 0, proc.stderr[-3000:]
    ids = json.loads((tmp_path / "rqvae" / "semantic_ids.json").read_text())
    assert ids["codebook_sizes"][:3] == [4, 4, 4]
    assert "experiment.dataset = 'amazon:beauty'" in (tmp_path / "rqvae" / "config.gin").read_text()
    assert json.loads((tmp_path / "rqvae" / "metrics.json").read_text())["num_items"] == 20
