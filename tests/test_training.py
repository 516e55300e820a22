"""The shared loop on a tiny synthetic task: schedule, early stopping, resume, errors, run folder."""

import json
import time

import gin
import pytest
import torch
from torch.utils.data import TensorDataset

from genrec.training import fit, lr_lambda


class _Regressor(torch.nn.Module):
    def __init__(self, nan=False):
        super().__init__()
        self.lin = torch.nn.Linear(3, 1)
        self.drop = torch.nn.Dropout(0.1)
        self.nan = nan

    def forward(self, x, y):
        pred = self.lin(self.drop(x)).squeeze(-1)
        loss = ((pred - y) ** 2).mean()
        return pred, loss * float("nan") if self.nan else loss


class _Pairs(TensorDataset):
    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        return {"x": x, "y": y}


def _data(n=64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=g)
    return _Pairs(x, x @ torch.tensor([1.0, -2.0, 0.5]))


def _evaluate(model, which, accelerator):
    x = torch.linspace(-1, 1, 30).reshape(10, 3)
    err = ((model.lin(x).squeeze(-1) - x @ torch.tensor([1.0, -2.0, 0.5])) ** 2).mean().item()
    return {"neg_mse": -err, "which": which}


def _fit(run_dir, model=None, **kw):
    gin.clear_config()
    torch.manual_seed(0)
    model = model or _Regressor()
    kw.setdefault("max_epochs", 6)
    return fit(model, _data(), _evaluate, run_dir=run_dir, info={"dataset": "synthetic"}, seed=1,
               batch_size=8, learning_rate=0.05, metric="neg_mse", **kw)


def test_lr_schedules():
    f = lr_lambda("linear", warmup_steps=2, total_steps=10)
    assert [round(f(s), 3) for s in (0, 1, 2, 6, 10)] == [0.5, 1.0, 1.0, 0.5, 0.0]
    c = lr_lambda("cosine", warmup_steps=0, total_steps=4)
    assert [round(c(s), 3) for s in (0, 2, 4)] == [1.0, 0.5, 0.0]
    with pytest.raises(ValueError, match="schedule"):
        lr_lambda("step", 0, 1)


def test_run_folder_and_metrics(tmp_path):
    result = _fit(tmp_path / "run")
    files = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert files == [".lock", "best.safetensors", "checkpoint.safetensors", "config.gin", "log.jsonl", "metrics.json"]
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["test"]["which"] == "test" and saved["valid"]["which"] == "valid"
    assert saved == json.loads(json.dumps(result))
    assert saved["epochs"] == 6 and saved["steps"] == 48 and saved["peak_rss_mib"] > 0
    assert saved["valid"]["neg_mse"] > -0.5  # it learned
    records = [json.loads(l) for l in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert sum("valid" in r for r in records) == 6 and "test" in records[-1]


def _records(run_dir):
    """log.jsonl without its timings."""
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if "seconds" not in k} for line in lines]


def test_resume_reaches_the_same_result(tmp_path):
    # validations at steps 5, 8, 10, 15, 16 (8 steps per epoch), log records every 4 steps: the run
    # stopped at the 5th validation resumes from the step-15 checkpoint, mid-epoch and inside the log
    # window of steps 13-16, whose losses it must carry over
    full = _fit(tmp_path / "full", eval_every_steps=5, log_every_steps=4)
    # interrupt at the 5th validation (step 16), then resume
    with pytest.raises(RuntimeError, match="interrupt"):
        def boom(model, which, acc, calls=[]):
            calls.append(1)
            if len(calls) == 5:  # the 5th validation, at step 16
                raise RuntimeError("interrupt")
            return _evaluate(model, which, acc)
        gin.clear_config()
        torch.manual_seed(0)
        fit(_Regressor(), _data(), boom, run_dir=tmp_path / "cut", info={}, seed=1, batch_size=8,
            learning_rate=0.05, metric="neg_mse", max_epochs=6, eval_every_steps=5, log_every_steps=4)
    resumed = _fit(tmp_path / "cut", eval_every_steps=5, log_every_steps=4)
    assert resumed["valid"] == full["valid"] and resumed["test"] == full["test"]
    assert resumed["steps"] == full["steps"]
    assert _records(tmp_path / "cut") == _records(tmp_path / "full")


def test_early_stopping_restores_best(tmp_path):
    def worsening(model, which, acc, calls=[]):
        calls.append(1)
        return {"score": 1.0 / len(calls)}  # best at the first evaluation
    gin.clear_config()
    out = fit(_Regressor(), _data(), worsening, run_dir=tmp_path / "es", info={}, seed=1, batch_size=8,
              metric="score", max_epochs=50, patience=3)
    assert out["epochs"] == 4 and out["best_epoch"] == 1 and out["valid"]["score"] == 1.0


def test_nan_loss_is_a_clear_error(tmp_path):
    with pytest.raises(FloatingPointError, match="learning_rate"):
        _fit(tmp_path / "nan", model=_Regressor(nan=True))


def test_unknown_metric_is_a_clear_error(tmp_path):
    gin.clear_config()
    with pytest.raises(KeyError, match="ndcg@10"):
        fit(_Regressor(), _data(), _evaluate, run_dir=tmp_path / "m", info={}, seed=1, max_epochs=1)


def test_run_folder_with_another_config_is_refused(tmp_path):
    _fit(tmp_path / "r", max_epochs=1)
    gin.clear_config()
    gin.parse_config("fit.max_epochs = 2")
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="different config"):
        fit(_Regressor(), _data(), _evaluate, run_dir=tmp_path / "r", info={}, seed=1, metric="neg_mse")
    gin.clear_config()


def test_successive_fits_with_different_precision(tmp_path):
    # accelerate's state is a process-wide singleton; two runs in one process may differ in precision
    assert _fit(tmp_path / "fp32", max_epochs=1, mixed_precision="no")["mixed_precision"] == "no"
    result = _fit(tmp_path / "bf16", max_epochs=1, mixed_precision="bf16")
    assert result["mixed_precision"] == "bf16" and result["valid"]["neg_mse"] > -5


def _evaluate_mse(model, which, accelerator):
    return {"mse": -_evaluate(model, which, accelerator)["neg_mse"]}


def test_mode_min_selects_the_lowest_value(tmp_path):
    best_max = _fit(tmp_path / "max", eval_every_epochs=1, patience=None)
    gin.clear_config()
    torch.manual_seed(0)
    best_min = fit(_Regressor(), _data(), _evaluate_mse, run_dir=tmp_path / "min", info={"dataset": "synthetic"},
                   seed=1, batch_size=8, learning_rate=0.05, metric="mse", mode="min", max_epochs=6,
                   eval_every_epochs=1, patience=None)
    # the same training, selected by -mse (max) or by mse (min): the same best step and value
    assert best_min["best_step"] == best_max["best_step"]
    assert best_min["valid"]["mse"] == pytest.approx(-best_max["valid"]["neg_mse"])
    with pytest.raises(ValueError, match="fit.mode"):
        _fit(tmp_path / "bad", mode="lowest")


def _evaluate_constant(model, which, accelerator):
    return {"flat": 0.5}


@pytest.mark.parametrize("ties_improve, best_epoch, epochs", [(False, 1, 3), (True, 6, 6)])
def test_ties_improve_takes_the_newer_weights_and_keeps_patience(tmp_path, ties_improve, best_epoch, epochs):
    gin.clear_config()
    torch.manual_seed(0)
    out = fit(_Regressor(), _data(), _evaluate_constant, run_dir=tmp_path, info={"dataset": "synthetic"}, seed=1,
              batch_size=8, learning_rate=0.05, metric="flat", max_epochs=6, patience=2, ties_improve=ties_improve)
    # a flat validation curve: the strict rule keeps epoch 1 and stops after 2 ties; RecBole's rule runs on
    assert (out["best_epoch"], out["epochs"]) == (best_epoch, epochs)
    assert out["selection"] == {"metric": "flat", "mode": "max", "patience": 2, "ties_improve": ties_improve,
                                "eval_every_epochs": 1, "eval_every_steps": None}


def _evaluate_dtype(model, which, accelerator):
    scores = model.lin(torch.linspace(-1, 1, 30).reshape(10, 3))
    return {"fp32": float(scores.dtype == torch.float32), "which": which}


def test_evaluation_scores_are_float32_under_mixed_precision(tmp_path):
    """Training may run in bf16, scores never: bf16 ties many items with the target (issue 13)."""
    gin.clear_config()
    torch.manual_seed(0)
    result = fit(_Regressor(), _data(), _evaluate_dtype, run_dir=tmp_path / "bf16", info={}, seed=1, batch_size=8,
                 max_epochs=1, mixed_precision="bf16", metric="fp32")
    assert result["mixed_precision"] == "bf16"
    assert result["valid"]["fp32"] == 1.0 and result["test"]["fp32"] == 1.0


def test_nan_loss_names_its_step_and_the_last_good_checkpoint(tmp_path):
    with pytest.raises(FloatingPointError, match=r"training loss is nan at step \d+\..*checkpoint"):
        _fit(tmp_path / "nan", model=_Regressor(nan=True), log_every_steps=4)


@pytest.mark.parametrize("setting,value", [
    ("max_steps", 0), ("max_steps", -3), ("max_epochs", 0), ("patience", -1), ("patience", 0),
    ("eval_every_epochs", 0), ("grad_accum_steps", 0), ("batch_size", 0), ("learning_rate", float("nan")),
    ("grad_clip", 0.0), ("eval_every_steps", 0), ("mode", "lowest"), ("max_epochs", 2.5), ("max_train_seconds", 0),
])
def test_settings_that_cannot_work_are_refused_before_any_work(tmp_path, setting, value):
    gin.clear_config()
    with pytest.raises(ValueError, match=rf"fit\.{setting} = .* cannot work"):
        fit(_Regressor(), _data(), _evaluate, run_dir=tmp_path / "bad", info={}, seed=1, **{setting: value})
    assert not (tmp_path / "bad").exists()


class _SlowRegressor(_Regressor):
    def forward(self, x, y):
        time.sleep(0.01)
        return super().forward(x, y)


def test_max_train_seconds_stops_training_and_validates(tmp_path):
    result = _fit(tmp_path / "run", _SlowRegressor(), max_epochs=1000, max_train_seconds=0.3, log_every_steps=1)
    assert result["stopped_by_time"] and result["max_train_seconds"] == 0.3
    assert 0.3 <= result["train_seconds"] < 5 and result["steps"] < 1000 * 8
    records = [json.loads(l) for l in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert records[-2]["step"] == result["steps"] and "valid" in records[-2]  # validated where it stopped
    assert "stopped_by_time" not in _fit(tmp_path / "uncapped", max_epochs=1)


def test_a_run_folder_is_locked_while_a_run_uses_it(tmp_path):
    from genrec.io import file_lock

    (tmp_path / "busy").mkdir()
    with file_lock(tmp_path / "busy" / ".lock"), pytest.raises(RuntimeError, match="another process is running"):
        _fit(tmp_path / "busy")


def _interrupted_fit(run_dir, at_validation=3):
    """A run killed (by an exception) at its ``at_validation``-th validation, after a checkpoint."""
    def boom(model, which, acc, calls=[]):
        calls.append(1)
        if len(calls) == at_validation:
            raise RuntimeError("interrupt")
        return _evaluate(model, which, acc)
    gin.clear_config()
    torch.manual_seed(0)
    with pytest.raises(RuntimeError, match="interrupt"):
        fit(_Regressor(), _data(), boom, run_dir=run_dir, info={}, seed=1, batch_size=8, learning_rate=0.05,
            metric="neg_mse", max_epochs=6, eval_every_steps=5)


def test_a_moved_run_resumes_and_a_finished_run_is_reported(tmp_path):
    _interrupted_fit(tmp_path / "a")
    (tmp_path / "a").rename(tmp_path / "b")
    resumed = _fit(tmp_path / "b", eval_every_steps=5)
    full = _fit(tmp_path / "full", eval_every_steps=5)
    assert resumed["valid"] == full["valid"] and resumed["test"] == full["test"]
    # a finished run reports its metrics.json instead of evaluating test again
    saved = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert _fit(tmp_path / "b", eval_every_steps=5) == saved


def test_a_torn_log_line_does_not_block_resume(tmp_path):
    _interrupted_fit(tmp_path / "t")
    with (tmp_path / "t" / "log.jsonl").open("a") as f:
        f.write('{"step": 11, "lo')  # killed mid-write
    resumed = _fit(tmp_path / "t", eval_every_steps=5)
    records = [json.loads(line) for line in (tmp_path / "t" / "log.jsonl").read_text().splitlines()]
    full = _fit(tmp_path / "full", eval_every_steps=5)
    assert resumed["test"] == full["test"] and resumed["steps"] == full["steps"]
    assert [r["step"] for r in records] == sorted(r["step"] for r in records)


def test_identity_ignores_run_folder_bindings():
    from genrec.training.run_folder import config_identity as _identity

    assert _identity("a.b = 1\ntrain_x.run_dir = 'x'\n") == _identity("a.b = 1\ntrain_x.run_dir = 'y/z'\n")
    assert _identity("a.b = 1\n") != _identity("a.b = 2\n")


def test_fused_adamw_trains_on_a_cpu_too(tmp_path):
    reference = _fit(tmp_path / "ref", max_epochs=2)
    fused = _fit(tmp_path / "fused", max_epochs=2, fused_adamw=True)
    assert fused["valid"]["neg_mse"] == pytest.approx(reference["valid"]["neg_mse"], rel=1e-3, abs=1e-4)


def test_test_curve_evaluates_test_after_each_validation_without_selecting_on_it(tmp_path):
    calls = []

    def evaluate(model, which, accelerator):
        calls.append(which)
        return _evaluate(model, which, accelerator)

    gin.clear_config()
    torch.manual_seed(0)
    result = fit(_Regressor(), _data(), evaluate, run_dir=tmp_path / "run", info={}, seed=1, batch_size=8,
                 learning_rate=0.05, metric="neg_mse", max_epochs=3, test_curve=True)
    assert calls == ["valid", "test"] * 3 + ["test"]
    assert [point["epoch"] for point in result["test_curve"]] == [1, 2, 3]
    assert result["steps_per_epoch"] == 8 and all(point["test"]["which"] == "test" for point in result["test_curve"])
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert sum("test_curve" in r for r in records) == 3
    assert "test_curve" not in _fit(tmp_path / "plain", max_epochs=1)


class _Block(torch.nn.Module):  # a class of our own: dynamo does not compile torch.nn's own modules as a frame
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)

    def forward(self, h):
        return torch.nn.functional.gelu(self.lin(h))


class _Stack(torch.nn.Module):
    """Three identical blocks between an input and an output layer (what fit.compile = 'blocks' compiles)."""

    def __init__(self):
        super().__init__()
        self.inp = torch.nn.Linear(3, 8)
        self.blocks = torch.nn.ModuleList(_Block() for _ in range(3))
        self.out = torch.nn.Linear(8, 1)

    def forward(self, x, y):
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h)
        pred = self.out(h).squeeze(-1)
        return pred, ((pred - y) ** 2).mean()


_COMPILING: list[bool] = []  # torch.compiler.is_compiling() as each _Block call saw it


def _evaluate_stack(model, which, accelerator):
    before = len(_COMPILING)
    x = torch.linspace(-1, 1, 30).reshape(10, 3)
    loss = model(x, x @ torch.tensor([1.0, -2.0, 0.5]))[1].item()
    assert not any(_COMPILING[before:])  # evaluation runs the blocks eagerly
    return {"neg_mse": -loss}


def test_compiled_blocks_train_like_eager(tmp_path, monkeypatch):
    from genrec.training.compiling import repeated_blocks

    stack = _Stack()
    assert repeated_blocks(stack) is stack.blocks
    monkeypatch.setattr(_Block, "forward", lambda self, h: (_COMPILING.append(torch.compiler.is_compiling()),
                                                            torch.nn.functional.gelu(self.lin(h)))[1])
    results = {}
    for mode in (False, "blocks"):
        gin.clear_config()
        torch.manual_seed(0)
        results[mode] = fit(_Stack(), _data(), _evaluate_stack, run_dir=tmp_path / str(mode), info={}, seed=1,
                            batch_size=8, learning_rate=0.01, metric="neg_mse", max_epochs=2, compile=mode)
    assert results["blocks"]["test"]["neg_mse"] == pytest.approx(results[False]["test"]["neg_mse"], rel=1e-4, abs=1e-6)
    assert True in _COMPILING  # the blocks were compiled for training
    with pytest.raises(ValueError, match="fit.compile = 'fast' cannot work"):
        _fit(tmp_path / "bad", compile="fast")
    with pytest.raises(ValueError, match="no list of repeated blocks"):
        _fit(tmp_path / "none", compile="blocks")
