"""Evaluate the Knowledge Plugin (DOKE): LLM re-ranking of candidate lists with and without knowledge.

    python genrec/trainers/knowledge_trainer.py config/knowledge/ml100k.gin [--gin "evaluate_knowledge.users = 20"]

Nothing is trained (DOKE leaves the LLM as it is); this is the plugin's run entry, configured like every
trainer. Steps: the experiment's data -> the target SASRec for the ``recommender`` provider
(:func:`genrec.explain.target.trained_sasrec`) -> the providers (:func:`genrec.knowledge.plugin.make_providers`)
-> a seeded sample of test users, one list of ``candidates`` items each (the test item + unseen
negatives, :func:`genrec.knowledge.plugin.candidate_lists`) -> the LLM orders each list with knowledge
and without (and with each provider alone when ``ablate``) -> ``metrics.json`` in the run folder: NDCG@10
and HR@1/5/10 per condition, SASRec alone on the same lists, the random expectation, prompt lengths,
seconds per user.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import gin
import numpy as np
import torch

from genrec.config import check_all_bindings_used, run
from genrec.data import SPLITS
from genrec.evaluation.metrics import ndcg_at_k, recall_at_k
from genrec.explain.target import trained_sasrec
from genrec.io import atomic_write_text
from genrec.knowledge import KnowledgePlugin, LLMReranker, RecommenderKnowledge, candidate_lists
from genrec.knowledge.plugin import make_providers
from genrec.llm import BUNDLED_LLM, load_causal_lm
from genrec.progress import progress
from genrec.training import experiment


def ranking_metrics(ranks: list[int]) -> dict:
    """NDCG@10 and HR@1/5/10 of 0-based ranks of the positive."""
    ranks = np.asarray(ranks)
    return {"ndcg@10": round(ndcg_at_k(ranks, 10), 4), "hit@1": round(recall_at_k(ranks, 1), 4),
            "hit@5": round(recall_at_k(ranks, 5), 4), "hit@10": round(recall_at_k(ranks, 10), 4)}


@gin.configurable
def evaluate_knowledge(run_dir: str = "runs/knowledge/ml100k", users: int = 100, candidates: int = 20, seed: int = 0,
                       target_run: str = "runs/explain/sasrec_debug",
                       target_config: str = "config/sasrec/ml100k_debug.gin", llm: str = BUNDLED_LLM,
                       ablate: bool = False) -> dict:
    """Re-ranks ``users`` test users' candidate lists with and without knowledge; returns (and writes) the metrics.

    Args:
        run_dir: where ``metrics.json`` goes.
        users: test users sampled (seeded); candidates: list length (1 positive + negatives).
        seed: draws the users, the negatives and the shown order.
        target_run, target_config: the SASRec of the ``recommender`` provider (trained when missing).
        llm: the re-ranking LLM (bundled SmolLM2, a folder or a hub id).
        ablate: also each provider alone.
    """
    sasrec = trained_sasrec(target_run, target_config)
    exp = experiment()
    test = exp.split.test
    rows = np.sort(np.random.default_rng(seed).choice(len(test), min(users, len(test)), replace=False))
    histories, targets = [test.histories[i] for i in rows], test.targets[rows]
    lists = candidate_lists(exp.num_items, histories, targets, candidates, seed)

    model, tokenizer = load_causal_lm(llm)
    reranker = LLMReranker(model, tokenizer)
    providers = make_providers(exp.split.train, exp.num_items, exp.catalog, recommender=sasrec)
    plugin = KnowledgePlugin(providers, reranker, exp.catalog)
    check_all_bindings_used()
    conditions = {"with_knowledge": providers, "without_knowledge": []}
    if ablate:
        conditions.update({f"only_{p.name}": [p] for p in providers})

    ranks: dict[str, list[int]] = {name: [] for name in [*conditions, "sasrec_alone"]}
    prompt_tokens: dict[str, list[int]] = {name: [] for name in conditions}
    seconds = {name: 0.0 for name in conditions}
    sasrec_order = RecommenderKnowledge(sasrec, exp.catalog)
    for history, target, shown in progress(list(zip(histories, targets, lists)), desc="knowledge users", unit="user"):
        ranks["sasrec_alone"].append(int(np.flatnonzero(sasrec_order.order(history, shown) == target)[0]))
        for name, chosen in conditions.items():
            plugin.providers = chosen
            t0 = time.perf_counter()
            order = plugin.rank(history, shown, use_knowledge=bool(chosen))
            seconds[name] += time.perf_counter() - t0
            ranks[name].append(int(np.flatnonzero(order == target)[0]))
            prompt_tokens[name].append(len(reranker.prompt_ids(plugin.prompt(history, shown, bool(chosen)))))
    random_ndcg = float(np.mean([1 / np.log2(r + 2) if r < 10 else 0.0 for r in range(candidates)]))
    result = {
        "dataset": exp.info["dataset"], "split": exp.info["split"], "users": len(rows), "candidates": candidates,
        "seed": seed, "llm": llm, "scoring": reranker.scoring, "length_norm": reranker.length_norm,
        "providers": [p.name for p in providers], **{name: ranking_metrics(r) for name, r in ranks.items()},
        "random_expected": {"ndcg@10": round(random_ndcg, 4), "hit@1": round(1 / candidates, 4),
                            "hit@5": round(5 / candidates, 4), "hit@10": round(10 / candidates, 4)},
        "with_minus_without_ndcg@10": round(ndcg_at_k(np.array(ranks["with_knowledge"]), 10)
                                            - ndcg_at_k(np.array(ranks["without_knowledge"]), 10), 4),
        "mean_prompt_tokens": {name: round(float(np.mean(t)), 1) for name, t in prompt_tokens.items()},
        "seconds_per_user": {name: round(s / len(rows), 2) for name, s in seconds.items()},
        "threads": torch.get_num_threads(), "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    if int(os.environ.get("RANK", "0")) == 0:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(run_dir) / "metrics.json", json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    print(json.dumps(run(evaluate_knowledge, splits=list(SPLITS)), indent=2))
