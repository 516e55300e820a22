"""Knowledge Plugin (DOKE): LLM re-ranking of 20 candidates with knowledge in the prompt vs without.

    python benchmarks/knowledge.py [--config config/knowledge/ml100k.gin] [--users 100] [--threads 1]

On ml-100k (leave-one-out), a seeded sample of ``--users`` test users; each gets one list of 20
candidates (the test item + 19 items the user never interacted with, shuffled, seeded), the same list
in every condition. The LLM (bundled SmolLM2-135M-Instruct unless the config says otherwise) orders
the list twice from the same template, history and candidates: once with the providers' knowledge
(item co-occurrence in the training interactions, item-text embedding neighbours, a trained SASRec's
order of the candidates, genres and the user's genre profile) and once without. ``--ablate`` also runs
each provider alone. Ranking is by candidate likelihood (``LLMReranker.scoring``, deterministic) or by
the generated list mapped back with the title matcher (``--gin "LLMReranker.scoring = 'generation'"``).

Reported beside them, on the same lists: SASRec alone (the recommender the ``recommender`` provider
reads; trained with ``config/sasrec/ml100k_debug.gin`` into ``--sasrec`` when missing) and the expected
value of a random order. Prints one JSON line: NDCG@10, HR@1/5/10 per condition, prompt lengths,
seconds, load average and threads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from genrec.config import check_all_bindings_used, parse_gin  # noqa: E402
from genrec.evaluation.metrics import ndcg_at_k, recall_at_k  # noqa: E402
from genrec.explain.target import trained_sasrec  # noqa: E402
from genrec.knowledge import KnowledgePlugin, LLMReranker, RecommenderKnowledge, candidate_lists  # noqa: E402
from genrec.knowledge.plugin import make_providers  # noqa: E402
from genrec.llm import load_causal_lm  # noqa: E402
from genrec.progress import progress  # noqa: E402
from genrec.training import experiment  # noqa: E402


def metrics(ranks: list[int]) -> dict:
    ranks = np.asarray(ranks)
    return {"ndcg@10": round(ndcg_at_k(ranks, 10), 4), "hit@1": round(recall_at_k(ranks, 1), 4),
            "hit@5": round(recall_at_k(ranks, 5), 4), "hit@10": round(recall_at_k(ranks, 10), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="config/knowledge/ml100k.gin")
    parser.add_argument("--gin", action="append", default=[], help="extra gin bindings")
    parser.add_argument("--users", type=int, default=100, help="test users sampled (seeded)")
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sasrec", default="runs/explain/sasrec_debug", help="SASRec run folder (trained if missing)")
    parser.add_argument("--llm", default="bundled:smollm2-135m-instruct")
    parser.add_argument("--ablate", action="store_true", help="also each provider alone")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()

    sasrec = trained_sasrec(args.sasrec)
    parse_gin([args.config], args.gin)
    exp = experiment()
    test = exp.split.test
    rows = np.sort(np.random.default_rng(args.seed).choice(len(test), min(args.users, len(test)), replace=False))
    histories, targets = [test.histories[i] for i in rows], test.targets[rows]
    lists = candidate_lists(exp.num_items, histories, targets, args.candidates, args.seed)

    llm, tokenizer = load_causal_lm(args.llm)
    reranker = LLMReranker(llm, tokenizer)
    providers = make_providers(exp.split.train, exp.num_items, exp.catalog, recommender=sasrec)
    plugin = KnowledgePlugin(providers, reranker, exp.catalog)
    check_all_bindings_used()
    conditions = {"with_knowledge": providers, "without_knowledge": []}
    if args.ablate:
        conditions.update({f"only_{p.name}": [p] for p in providers})

    ranks: dict[str, list[int]] = {name: [] for name in conditions}
    ranks["sasrec_alone"] = []
    prompt_tokens: dict[str, list[int]] = {name: [] for name in conditions}
    seconds: dict[str, float] = {name: 0.0 for name in conditions}
    sasrec_order = RecommenderKnowledge(sasrec, exp.catalog)
    for history, target, candidates in progress(list(zip(histories, targets, lists)), desc="knowledge users",
                                                unit="user"):
        ranks["sasrec_alone"].append(int(np.flatnonzero(sasrec_order.order(history, candidates) == target)[0]))
        for name, chosen in conditions.items():
            plugin.providers = chosen
            t0 = time.perf_counter()
            order = plugin.rank(history, candidates, use_knowledge=bool(chosen))
            seconds[name] += time.perf_counter() - t0
            ranks[name].append(int(np.flatnonzero(order == target)[0]))
            prompt_tokens[name].append(len(reranker.prompt_ids(plugin.prompt(history, candidates, bool(chosen)))))
    n = args.candidates
    random_ndcg = float(np.mean([1 / np.log2(r + 2) if r < 10 else 0.0 for r in range(n)]))
    result = {
        "benchmark": "knowledge", "dataset": exp.info["dataset"], "split": exp.info["split"], "users": len(rows),
        "candidates": n, "seed": args.seed, "llm": args.llm, "scoring": reranker.scoring,
        "length_norm": reranker.length_norm, "providers": [p.name for p in providers],
        **{name: metrics(r) for name, r in ranks.items()},
        "random_expected": {"ndcg@10": round(random_ndcg, 4), "hit@1": round(1 / n, 4), "hit@5": round(5 / n, 4),
                            "hit@10": round(10 / n, 4)},
        "with_minus_without_ndcg@10": round(ndcg_at_k(np.array(ranks["with_knowledge"]), 10)
                                            - ndcg_at_k(np.array(ranks["without_knowledge"]), 10), 4),
        "mean_prompt_tokens": {name: round(float(np.mean(t)), 1) for name, t in prompt_tokens.items()},
        "seconds_per_user": {name: round(s / len(rows), 2) for name, s in seconds.items()},
        "threads": torch.get_num_threads(), "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()], "torch": torch.__version__,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
