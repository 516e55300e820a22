"""Train RecExplainer: an LLM aligned to a trained SASRec (behaviour, intention or hybrid mode).

    python genrec/trainers/explain_trainer.py config/explain/ml100k_debug.gin [--gin "RecExplainer.mode = 'behaviour'"]

Steps: the experiment's data -> the target SASRec (``train_explainer.target_run``; trained there with
``target_config`` when missing) -> its scores, user vectors (last hidden state of each user's training
sequence) and item vectors -> alignment examples of every task for the training users
(:class:`~genrec.explain.tasks.AlignmentTasks`) -> :class:`~genrec.explain.model.RecExplainer` through
the shared loop, selected on valid fidelity -> test fidelity (:func:`~genrec.explain.fidelity.fidelity`)
on held-out users, the same users for every mode (``eval_seed``). ``explanations.jsonl`` in the run
folder holds the explainer's free-text explanation of the target's top-1 for the first test users.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import gin
import numpy as np
import torch

from genrec.config import run
from genrec.data import SPLITS
from genrec.explain.fidelity import fidelity, name_trie
from genrec.explain.model import RecExplainer
from genrec.explain.target import item_vectors, trained_sasrec, user_vectors
from genrec.explain.tasks import AlignmentTasks
from genrec.io import atomic_write_text
from genrec.knowledge.providers import item_name
from genrec.llm.finetune import pad_examples
from genrec.training import experiment, fit, seed_everything


class ExampleSet(torch.utils.data.Dataset):
    """Tokenised alignment examples: (ids, labels) and the placeholder vectors of each."""

    def __init__(self, model: RecExplainer, examples):
        self.rows = [(*model.training_example(e.prompt, e.answer), e.user_vectors, e.item_vectors) for e in examples]
        self.pad = model.tokenizer.pad_token_id

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

    def collate(self, rows) -> dict[str, torch.Tensor]:
        batch = pad_examples([(np.array(ids), np.array(labels)) for ids, labels, _, _ in rows], self.pad)
        batch["user_vectors"] = torch.cat([u for _, _, u, _ in rows])
        batch["item_vectors"] = torch.cat([i for _, _, _, i in rows])
        return batch


def explain_one(model: RecExplainer, tasks: AlignmentTasks, user: int) -> dict:
    """The explainer's explanation of the target's top-1 item for ``user`` (free text, greedy)."""
    top = int(tasks.ranked(user)[0])
    example = tasks.example("explain", user, f"{tasks.user_text(user)} The recommender suggests "
                             f"{tasks.item_text(top)}. Explain why in one sentence. Answer:", "", [top])
    text = model.generate_text(model.encode(example.prompt), example.user_vectors, example.item_vectors)
    return {"user": user, "item": item_name(tasks.catalog, top), "prompt": example.prompt, "explanation": text}


@gin.configurable
def train_explainer(run_dir: str = "runs/explain/ml100k", seed: int = 2020,
                    target_run: str = "runs/sasrec/ml100k", target_config: str = "config/sasrec/ml100k.gin",
                    valid_users: int = 50, test_users: int = 200, eval_seed: int = 0, explanations: int = 3) -> dict:
    """Trains the explainer on the training users' alignment examples; returns the metrics of the run.

    Args:
        run_dir: the run folder.
        seed: seeds connector/LoRA initialisation, examples and batch order.
        target_run: the SASRec run folder whose ``model/`` is the target (trained there when missing).
        target_config: the SASRec config used when the target must be trained.
        valid_users: held-out users for model selection; test_users: held-out users reported once.
        eval_seed: draws the held-out users and their evaluation examples (keep it fixed across modes).
        explanations: test users whose explanation is written to ``explanations.jsonl``.
    """
    seed_everything(seed)
    exp = experiment()
    target = trained_sasrec(target_run, target_config)
    histories = [np.asarray(s, np.int64) for s in exp.split.train]
    users = np.random.default_rng(eval_seed).permutation(len(histories))
    users = [int(u) for u in users if len(histories[u])]
    held = {"valid": users[:valid_users], "test": users[valid_users:valid_users + test_users]}
    train_users = sorted(users[valid_users + test_users:])
    with torch.no_grad():
        scores = torch.cat([target.score(histories[i:i + 256]) for i in range(0, len(histories), 256)])
        for u, h in enumerate(histories):
            scores[u, torch.from_numpy(h.copy())] = float("-inf")
        user_vecs = torch.cat([user_vectors(target, histories[i:i + 256]) for i in range(0, len(histories), 256)])
    model = RecExplainer(rec_dim=user_vecs.shape[1])
    tasks = AlignmentTasks(scores, user_vecs, item_vectors(target), histories, exp.catalog, model.mode)
    data = ExampleSet(model, tasks.examples(train_users, seed))
    trie = name_trie(model, exp.catalog)

    def evaluate(explainer, which, accelerator):
        return fidelity(explainer, tasks, held[which], trie, seed=eval_seed)

    info = {**exp.info, "mode": model.mode, "tuning": model.settings["tuning"], "llm": model.settings["pretrained_path"],
            "target": str(Path(target_run) / "model"), "tasks": tasks.tasks, "training_examples": len(data),
            "train_users": len(train_users), "valid_users": len(held["valid"]), "test_users": len(held["test"]),
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    metrics = fit(model, data, evaluate, run_dir=run_dir, info=info, seed=seed, collate_fn=data.collate)
    if int(os.environ.get("RANK", "0")) == 0 and explanations:
        model.eval()
        lines = [json.dumps(explain_one(model, tasks, u)) for u in held["test"][:explanations]]
        atomic_write_text(Path(run_dir) / "explanations.jsonl", "\n".join(lines) + "\n")
    return metrics


if __name__ == "__main__":
    metrics = run(train_explainer, splits=list(SPLITS))
    print(json.dumps({"valid": metrics["valid"], "test": metrics["test"]}, indent=2))
