"""Configs from any directory, and a second gin configuration inside a run (semantic-ID builds)."""

import gin
import pytest

import genrec.trainers.sasrec_trainer  # noqa: F401  (registers train_sasrec, SASRec)
from genrec.config import ConfigError, isolated_config, parse_gin
from genrec.semantic_ids.build import train_rqvae  # noqa: F401
from genrec.training import fit  # noqa: F401


def test_shipped_configs_and_their_includes_parse_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parse_gin(["config/sasrec/ml100k_debug.gin"])  # includes config/sasrec/ml100k.gin
    assert gin.query_parameter("fit.max_epochs") == 10
    with pytest.raises(ConfigError, match="gin file not found: config/nope.gin"):
        parse_gin(["config/nope.gin"])
    gin.clear_config()


def test_a_local_file_wins_over_the_repository(tmp_path, monkeypatch):
    (tmp_path / "config" / "sasrec").mkdir(parents=True)
    (tmp_path / "config" / "sasrec" / "ml100k.gin").write_text("fit.max_epochs = 3\n")
    monkeypatch.chdir(tmp_path)
    parse_gin(["config/sasrec/ml100k.gin"])
    assert gin.query_parameter("fit.max_epochs") == 3
    gin.clear_config()


def test_isolated_config_restores_the_callers_configuration():
    parse_gin([], ["fit.batch_size = 8", "experiment.dataset = 'ml-1m'"])
    before = gin.config_str()
    with isolated_config(["config/rqvae/ml100k_debug.gin"], ["train_rqvae.run_dir = '/tmp/x'"]):
        assert gin.query_parameter("fit.batch_size") == 1024
        assert gin.query_parameter("experiment.dataset") == "ml-100k"
    assert gin.query_parameter("fit.batch_size") == 8 and gin.config_str() == before
    with pytest.raises(ConfigError, match="gin file not found"), isolated_config(["missing.gin"]):
        pass
    assert gin.config_str() == before
    gin.clear_config()


def test_threads_option():
    from genrec.config import parse_args

    assert parse_args(["a.gin", "--threads", "1"], "t", ["loo"]).threads == 1
    assert parse_args(["a.gin"], "t", ["loo"]).threads is None
    with pytest.raises(ConfigError, match="--threads must be >= 1"):
        parse_args(["a.gin", "--threads", "0"], "t", ["loo"])
