"""Chat with the recommender agent in a terminal.

    python -m genrec.agent --dataset ml-100k [--planner llm|rules] [--ranker runs/sasrec/model]
        [--retriever runs/retrieval/ml100k/model] [--user 196]

Type a request ("a funny movie from the 90s", "something like Star Wars", "I didn't like Heat");
``/plan`` shows the last plan, ``/memory`` the likes, dislikes and shown items, ``/quit`` ends.
The user's history (``--user``, a raw user id) feeds the ranker; without it the history is empty.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None, stdin=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genrec.agent", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--planner", choices=("llm", "rules"), default="llm")
    parser.add_argument("--llm", default="bundled:smollm2-135m-instruct", help="planner LLM spec")
    parser.add_argument("--ranker", default="popularity", help="'popularity' or a saved SASRec/HSTU folder")
    parser.add_argument("--retriever", default="bundled:all-minilm-l6-v2",
                        help="retrieval model folder, encoder spec, or 'none'")
    parser.add_argument("--user", default=None, help="raw user id whose history the ranker sees")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    import torch

    from genrec.agent.agent import InteRecAgent
    from genrec.agent.build import load_ranker, make_planner, make_toolbox
    from genrec.agent.memory import Memory
    from genrec.data import load_dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    stdin = stdin or sys.stdin
    try:
        interactions, catalog = load_dataset(args.dataset)
        split = interactions.split("loo")
        history = [] if args.user is None else split.train[interactions.user_index(args.user)].tolist()
        tools = make_toolbox(catalog, load_ranker(args.ranker, interactions, split.train), args.retriever)
        agent = InteRecAgent(tools, make_planner(args.planner, tools, args.llm), Memory(history=history), k=args.k)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"genrec agent on {args.dataset} ({args.planner} planner); /plan, /memory, /quit")
    last = None
    while True:
        print("you> ", end="", flush=True)
        line = stdin.readline()
        if not line or line.strip() == "/quit":
            return 0
        text = line.strip()
        if not text:
            continue
        if text == "/plan":
            print(last.plan if last else "no plan yet")
            continue
        if text == "/memory":
            memory = agent.memory
            print(f"liked: {[tools.table.title(i) for i in memory.liked]}; disliked: "
                  f"{[tools.table.title(i) for i in memory.disliked]}; shown: {len(memory.shown)} items")
            continue
        last = agent.chat(text)
        print(f"agent> plan {last.plan}\n{last.reply}")


if __name__ == "__main__":
    raise SystemExit(main())
