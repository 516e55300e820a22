"""fit.log_with: the log.jsonl records reach accelerate's TensorBoard tracker; unknown or missing trackers fail
with the fix before training."""

import json

import gin
import pytest
import torch
from accelerate.tracking import get_available_trackers
from torch.utils.data import TensorDataset

from genrec.training import fit
from genrec.training.trackers import check_tracker, numeric_values


class _Line(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 1)

    def forward(self, x, y):
        return None, ((self.lin(x).squeeze(-1) - y) ** 2).mean()


class _Pairs(TensorDataset):
    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        return {"x": x, "y": y}


def _fit(run_dir, **kw):
    gin.clear_config()
    torch.manual_seed(0)
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    model = _Line()

    def evaluate(model, which, accelerator):
        return {"neg_mse": -float(((model.lin(x).squeeze(-1) - x.sum(1)) ** 2).mean()), "sampled": {"hit@10": 0.5}}

    return fit(model, _Pairs(x, x.sum(1)), evaluate, run_dir=run_dir, info={"dataset": "synthetic"}, seed=1,
               batch_size=8, learning_rate=0.05, metric="neg_mse", max_epochs=3, log_every_steps=2, **kw)


def test_numeric_values_flatten_records():
    record = {"step": 4, "epoch": 1, "loss": 2, "valid": {"ndcg@10": 0.25, "usage": [1, 2], "ok": True}}
    assert numeric_values(record) == {"loss": 2.0, "valid/ndcg@10": 0.25}


@pytest.mark.parametrize("name,message", [("tensorbored", "not a tracker accelerate knows.*tensorboard"),
                                          ("aim", "needs the aim package.*pip install aim")])
def test_unknown_or_missing_tracker_is_a_clear_error(name, message, tmp_path):
    if name in {str(t) for t in get_available_trackers()}:
        pytest.skip(f"{name} is installed here")
    with pytest.raises(ValueError, match=message):
        check_tracker(name)
    with pytest.raises(ValueError, match="fit.log_with"):
        _fit(tmp_path / "run", log_with=name)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_tensorboard_gets_the_log_records(tmp_path):
    if "tensorboard" not in {str(t) for t in get_available_trackers()}:
        with pytest.raises(ValueError, match=r"needs the tensorboard package.*pip install"):
            check_tracker("tensorboard")
        pytest.skip("tensorboard is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _fit(tmp_path / "run", log_with="tensorboard")
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss", "lr", "valid/neg_mse", "valid/sampled/hit@10", "test/neg_mse"} <= tags, tags
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [(r["step"], r["loss"]) for r in records if "loss" in r]
    logged = [(e.step, e.value) for e in events.Scalars("loss")]
    assert [step for step, _ in logged] == [step for step, _ in losses] == [2, 4, 6, 8, 10, 12]
    assert [value for _, value in logged] == pytest.approx([value for _, value in losses], rel=1e-6)
    assert [e.step for e in events.Scalars("valid/neg_mse")] == [4, 8, 12]
