"""Command line of RecLM-eval: evaluate a language model as a recommender.

    python -m genrec.lmeval --task ranking [--dataset ml-100k] [--backend hf|openai|random]
        [--model bundled:smollm2-135m-instruct | <folder> | <hub id>] [--users 100] [--seed 2020]
        [--base-url http://127.0.0.1:8000/v1 --model NAME --api-key-env OPENAI_API_KEY]
        [--max-new-tokens T] [--batch-size B] [--threads 1] [--cache FILE] [--out result.json]

Tasks: ``retrieval``, ``ranking``, ``cf_ranking_mc``, ``seq_ranking_mc`` (see
:mod:`genrec.evaluation.lm_tasks`). Prints the result as one JSON line (and writes it to ``--out``);
answers are cached (:mod:`genrec.evaluation.lm_eval`), so an interrupted run resumes where it
stopped. The API key of an endpoint is read from the environment variable ``--api-key-env`` names;
it is never written anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from genrec.evaluation.lm_backends import BackendError, HFBackend, OpenAIBackend, RandomBackend
from genrec.evaluation.lm_eval import LMEvalError, evaluate_examples, default_cache_path, prepare_examples
from genrec.evaluation.lm_tasks import TASKS
from genrec.io import atomic_write_text

BACKENDS = ("hf", "openai", "random")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m genrec.lmeval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True, choices=TASKS, help="what the model is asked")
    parser.add_argument("--dataset", default="ml-100k", help="dataset name or recai:<folder> (default ml-100k)")
    parser.add_argument("--backend", default="hf", choices=BACKENDS, help="hf: a local causal LM (default); openai: "
                        "an OpenAI-compatible endpoint; random: chance, for sanity")
    parser.add_argument("--model", default=None, help="hf: bundled:<name>, a folder or a hub id (default the bundled "
                        "SmolLM2); openai: the served model's name")
    parser.add_argument("--base-url", default=None, help="openai: the endpoint, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY", help="openai: environment variable with the key")
    parser.add_argument("--completions", action="store_true", help="openai: use /completions instead of chat")
    parser.add_argument("--users", type=int, default=100, help="users drawn with --seed (default 100; 0 = all)")
    parser.add_argument("--seed", type=int, default=2020, help="seed of users, negatives and order (default 2020)")
    parser.add_argument("--split", default="test", choices=("test", "valid"), help="leave-one-out row (default test)")
    parser.add_argument("--max-history", type=int, default=20, help="history items shown (default 20)")
    parser.add_argument("--candidates", type=int, default=20, help="ranking candidates, target included (default 20)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="answer length (default per task)")
    parser.add_argument("--batch-size", type=int, default=8, help="hf: prompts per generate call; openai: requests "
                        "in flight (default 8)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a shared CPU)")
    parser.add_argument("--cache", default=None, help="answer cache file (default under <data dir>/cache/lmeval/)")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the answer cache")
    parser.add_argument("--out", default=None, help="also write the result JSON to this file")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    for name in ("users", "max_history", "candidates", "batch_size"):
        if getattr(args, name) < (0 if name == "users" else 1):
            parser.error(f"--{name.replace('_', '-')} must be >= {0 if name == 'users' else 1}")
    if args.backend == "openai" and (not args.base_url or not args.model):
        parser.error("--backend openai needs --base-url and --model")
    return args


def make_backend(args: argparse.Namespace, titles: Sequence[str]):
    """The backend the arguments describe."""
    if args.backend == "random":
        return RandomBackend(titles, seed=args.seed)
    if args.backend == "openai":
        return OpenAIBackend(args.base_url, args.model, api_key_env=args.api_key_env, chat=not args.completions,
                             max_tokens=args.max_new_tokens, workers=args.batch_size)
    return HFBackend(args.model, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)


def main(argv: Sequence[str] | None = None) -> dict:
    """Runs one evaluation; prints the result as one JSON line; exits 2 with one line on a bad input."""
    args = parse_args(argv)
    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))
    try:
        examples, matcher, titles, name = prepare_examples(
            args.dataset, args.task, num_users=args.users or None, seed=args.seed, split=args.split,
            max_history=args.max_history, num_candidates=args.candidates)
        backend = make_backend(args, titles)
        cache = None if args.no_cache else (args.cache or default_cache_path(name, args.task, backend.identity))
        result = evaluate_examples(backend, examples, matcher, cache_path=cache, show_progress=not args.no_progress)
    except (BackendError, LMEvalError, ValueError, OSError) as error:
        print(f"genrec.lmeval: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    import torch

    result.update({"dataset": name, "seed": args.seed, "split": args.split, "threads": torch.get_num_threads(),
                   "load_average": _load_average()})
    line = json.dumps(result)
    print(line)
    if args.out:
        atomic_write_text(args.out, line + "\n")
    return result


def _load_average() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return ""


if __name__ == "__main__":
    main()
