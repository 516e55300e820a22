"""RecLM-gen SFT and RecLM-cgen constraints on MovieLens-100k: SmolLM2 before and after SFT, with and
without span constraints, and random; prints one JSON line.

    python benchmarks/reclm.py --threads 1                      # debug SFT (trained first if missing), 50 users
    python benchmarks/reclm.py --sft-run runs/reclm/ml100k/sft  # a model trained with config/reclm/ml100k/sft.gin

Every row is evaluated on the same fixed random sample of ``--users`` test users (leave-one-out,
``experiment.eval_rows`` with its seed) by :func:`genrec.evaluation.reclm_eval.evaluate_answers`:
the model is asked for 10 movies; its answer's entries (spans when it wrote any, else lines) are
mapped to items by exact title, then by the RecLM-eval title matcher
(:class:`genrec.evaluation.title_matcher.TitleMatcher`, trigram TF-IDF, threshold 0.6); Recall@10
and NDCG@10 by full ranking of that list; NonExistRate (entries among the first 10 mapped to no
item, per answer, as RecLM-gen counts it), ExactNonExistRate (entries that are not exactly a
catalogue title), RepeatRate, InHistoryRate, CorrectCount (answer has exactly 10 entries).

* ``untuned``: the bundled SmolLM2-135M-Instruct with ``<SOI>``/``<EOI>`` added (mean-phrase rows);
  unconstrained it writes free text; constrained, list mode forces ten spans, each a catalogue title.
* ``sft``: the RecLM-gen SFT model of ``--sft-run`` (``model/``). When missing, the debug SFT
  (``config/reclm/ml100k/sft_debug.gin``: LoRA, a few dozen steps) is trained first; its teacher is
  the debug SASRec when ``runs/sasrec/ml100k_debug/model`` exists, else popularity (reported).
* ``random``: ten distinct random items per user (seeded).

``--variants`` picks the decodings evaluated per model: ``plain`` (``<model>``), ``cgen``
(``<model>_cgen``) and ``cgen_nohist`` (``<model>_cgen_nohist``: cgen whose spans never name an item of
the user's history, ``evaluate_answers(exclude_history=True)``, the counterpart of masking the history
for a scoring model; MovieLens test targets are never in the history). With ``cgen_nohist``, the
``random_nohist`` row draws its ten items outside each user's history.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from genrec.decoding.title_trie import catalogue_titles  # noqa: E402
from genrec.evaluation.reclm_eval import evaluate_answers  # noqa: E402
from genrec.evaluation.title_matcher import TitleMatcher  # noqa: E402
from genrec.io import atomic_write_text  # noqa: E402
from genrec.llm.pretrained import BUNDLED_LLM  # noqa: E402
from genrec.llm.tasks import item_title  # noqa: E402
from genrec.models.reclm import RecLM  # noqa: E402
from genrec.progress import quiet_library_bars  # noqa: E402
from genrec.training import experiment  # noqa: E402
from trainer_run import run_trainer  # noqa: E402  (benchmarks/, this script's folder)

VARIANTS = {"plain": (False, False), "cgen": (True, False), "cgen_nohist": (True, True)}  # constrained, no history
KEEP = ("recall@10", "ndcg@10", "NonExistRate", "ExactNonExistRate", "RepeatRate", "InHistoryRate", "CorrectCount")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=50, help="test users (same sample for every row)")
    parser.add_argument("--sft-run", default="runs/reclm/ml100k/sft_debug", help="RecLM SFT run folder")
    parser.add_argument("--sft-config", default="config/reclm/ml100k/sft_debug.gin",
                        help="config that trains --sft-run when it has no model/")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default="untuned,sft", help="which of untuned,sft to evaluate")
    parser.add_argument("--variants", default="plain,cgen",
                        help=f"comma-separated decodings per model, any of {','.join(VARIANTS)}")
    parser.add_argument("--cache", default="runs/bench/reclm_rows.json",
                        help="finished rows, keyed by model and users; a rerun reuses them (delete to recompute)")
    args = parser.parse_args()
    quiet_library_bars()  # no weight-loading bars in a redirected log
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {"benchmark": "reclm", "dataset": "ml-100k", "split": "loo test", "users": args.users,
              "list_length": 10, "threads": torch.get_num_threads()}
    models, variants = args.models.split(","), args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; use any of {','.join(VARIANTS)}")
    sft_dir = REPO / args.sft_run
    if "sft" in models and not (sft_dir / "model").is_dir():
        sft_metrics, wall = run_trainer("reclm", args.sft_config, sft_dir)  # threads: OMP_NUM_THREADS
        result["sft_training"] = {"config": args.sft_config, "wall_s": round(wall, 1),
                                  "teacher": sft_metrics.get("teacher")}
    record = json.loads((sft_dir / "metrics.json").read_text()) if (sft_dir / "metrics.json").is_file() else {}
    result["sft"] = {"run": args.sft_run, "teacher": record.get("teacher"), "steps": record.get("steps"),
                     "tasks": record.get("task_examples")}

    exp = experiment(dataset="ml-100k", eval_rows=args.users, generate_batch_size=50)
    evaluator = exp.evaluators["test"]
    raw = [item_title(exp.catalog, i) if i else "" for i in range(len(exp.catalog.item_ids))]
    rows = {}
    untuned = RecLM(pretrained_path=BUNDLED_LLM, noun="movie", list_length=10).eval()
    titles = catalogue_titles(raw, untuned.tokenizer)
    untuned.attach(titles, exp.interactions.item_ids)
    matcher = TitleMatcher(titles[1:])
    cache_path = REPO / args.cache
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    for name in models:
        if name == "sft":
            model = RecLM.from_pretrained(sft_dir / "model")
            if model.titles != titles:
                raise SystemExit(f"{sft_dir / 'model'} was trained on other titles than ml-100k's; retrain it")
        else:
            model = untuned
        for variant in variants:
            constrained, exclude = VARIANTS[variant]
            key = name if variant == "plain" else f"{name}_{variant}"
            cache_key = f"{key}|{args.sft_run if name == 'sft' else BUNDLED_LLM}|users={args.users}"
            if cache_key not in cache:
                start = time.perf_counter()
                metrics = evaluate_answers(model, evaluator, None, constrained=constrained, matcher=matcher,
                                           exclude_history=exclude)
                row = {k: round(float(metrics[k]), 4) for k in KEEP if k in metrics}
                row["seconds"] = round(time.perf_counter() - start, 1)
                with open("/proc/loadavg") as f:
                    row["loadavg"] = f.read().split()[:3]
                cache[cache_key] = row
                cache_path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(cache_path, json.dumps(cache, indent=1) + "\n")
            rows[key] = cache[cache_key]
            print(f"{key}: {rows[key]}", file=sys.stderr, flush=True)
    rng = np.random.default_rng(args.seed)

    def random_lists(exclude):
        def draw(users, histories):
            lists = []
            for history in histories:
                pool = np.arange(1, exp.num_items + 1)
                if exclude:
                    pool = np.setdiff1d(pool, np.asarray(history))
                lists.append(rng.choice(pool, 20, replace=False))
            return torch.as_tensor(np.stack(lists))
        return draw

    for key, exclude in [("random", False)] + [("random_nohist", True)] * ("cgen_nohist" in variants):
        random_metrics = evaluator.evaluate_ranked(random_lists(exclude))
        rows[key] = {k: round(float(random_metrics[k]), 4) for k in ("recall@10", "ndcg@10")}
    result["rows"] = rows
    result["note"] = (f"SFT of {args.sft_run} ({record.get('steps')} steps) and {args.users} users on CPU: figures are "
                      "noisy (one hit = 1/users of Recall@10); not a full-recipe result")
    with open("/proc/loadavg") as f:
        result["loadavg_end"] = f.read().split()[:3]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
