"""Run by tests/test_sasrec.py under `torchrun --nproc_per_node 2`: a few DDP steps of SASRec on real
ml-100k. At every validation each rank saves the live weights it holds (before the loop restores the
best checkpoint), so the test can check that the ranks stayed identical."""

import sys
from pathlib import Path

from genrec.config import parse_gin
from genrec.data.windows import SequenceWindows
from genrec.models.sasrec import SASRec
from genrec.training import experiment, fit, seed_everything
from genrec.training.checkpoint import save_tensors

out = Path(sys.argv[1])
parse_gin([], ["experiment.dataset = 'ml-100k'", "fit.max_steps = 4", "fit.batch_size = 32"])
seed_everything(2020)
exp = experiment()
model = SASRec(num_items=exp.num_items)
initial = {k: v.clone() for k, v in model.state_dict().items()}
score = exp.evaluate_scores(lambda m, users, histories: m.score(histories))


def evaluate(m, which, accelerator):
    if which == "valid":
        save_tensors(out / f"rank{accelerator.process_index}.safetensors", m.state_dict(),
                     {"world": accelerator.num_processes})
    return score(m, which, accelerator)


fit(model, SequenceWindows(exp.split.train, model.max_history), evaluate, run_dir=out / "run", info=exp.info, seed=2020)
save_tensors(out / "initial.safetensors", initial)
