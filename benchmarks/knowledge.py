"""Knowledge Plugin (DOKE): LLM re-ranking of 20 candidates with knowledge in the prompt vs without.

    python benchmarks/knowledge.py [--config config/knowledge/ml100k.gin] [--users 100] [--ablate] [--threads 1]

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
value of a random order. The work is :func:`genrec.trainers.knowledge_trainer.evaluate_knowledge`;
this prints its metrics as one JSON line with the load average at start and end and the threads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from genrec.config import parse_gin  # noqa: E402
from genrec.trainers.knowledge_trainer import evaluate_knowledge  # noqa: E402


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
    parse_gin([args.config], args.gin)
    with tempfile.TemporaryDirectory() as run_dir:
        result = evaluate_knowledge(run_dir=run_dir, users=args.users, candidates=args.candidates, seed=args.seed,
                                    target_run=args.sasrec, llm=args.llm, ablate=args.ablate)
    result = {"benchmark": "knowledge", **result, "load_average_start": [round(x, 2) for x in load_start],
              "torch": torch.__version__}
    result["load_average_end"] = result.pop("load_average")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
