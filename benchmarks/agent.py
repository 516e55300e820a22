"""InteRecAgent on MovieLens-100k against a simulated user; prints one JSON line.

    python benchmarks/agent.py [--users 200] [--ranker runs/agent/sasrec_debug/model]
        [--retriever runs/retrieval/ml100k_debug/model] [--llm-turns 1] [--threads 1]

Users: ``--users`` test rows of the leave-one-out split (seeded sample); each simulated user knows
its held-out test item and reveals hints turn by turn (:mod:`genrec.agent.simulator`). Compared,
on the same users and hints:

* ``ranking_alone``: the ranking tool only (the ranker's top 10 for the history, items shown
  before left out): the no-agent baseline;
* ``agent_rules``: the agent with the rule planner;
* ``agent_llm``: the agent with the bundled SmolLM2 planner under the JSON plan grammar, for
  ``--llm-turns`` turns (CPU generation is slow; 1 = one-turn only). Every planner call is counted:
  ``valid_plans`` / ``plans`` is the share of plans that parse and name real tools and arguments.

The ranker is a saved SASRec folder (trained with ``config/sasrec/ml100k_debug.gin`` into
``runs/agent/sasrec_debug`` when missing); the soft-filter encoder is the RecLM-emb model when given,
else the frozen MiniLM. Load average and threads are recorded beside the timings.
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

from genrec.agent.agent import InteRecAgent  # noqa: E402
from genrec.agent.build import load_ranker, make_planner, make_toolbox  # noqa: E402
from genrec.agent.memory import Memory  # noqa: E402
from genrec.agent.planner import RulePlanner  # noqa: E402
from genrec.agent.simulator import simulate  # noqa: E402
from genrec.data import load_dataset  # noqa: E402


class CountingPlanner:
    """Wraps a planner; counts plans, valid plans and seconds."""

    def __init__(self, planner):
        self.planner, self.plans, self.valid, self.seconds, self.failures = planner, 0, 0, 0.0, []

    def plan(self, request):
        self.plans += 1
        t0 = time.perf_counter()
        try:
            plan = self.planner.plan(request)
            self.valid += 1
            return plan
        except ValueError as err:
            self.failures.append(str(err)[:200])
            return [("rank", "history")]
        finally:
            self.seconds += time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--max-turns", type=int, default=5)
    parser.add_argument("--ranker", default="runs/agent/sasrec_debug/model")
    parser.add_argument("--retriever", default="runs/retrieval/ml100k_debug/model")
    parser.add_argument("--llm", default="bundled:smollm2-135m-instruct")
    parser.add_argument("--llm-turns", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.chdir(REPO)
    if not Path(args.ranker).is_dir() and args.ranker == "runs/agent/sasrec_debug/model":
        from genrec.config import parse_gin
        from genrec.trainers.sasrec_trainer import train_sasrec

        parse_gin(["config/sasrec/ml100k_debug.gin"], ["train_sasrec.run_dir = 'runs/agent/sasrec_debug'"])
        train_sasrec()
    retriever = args.retriever if Path(args.retriever).is_dir() or args.retriever == "none" else "bundled:all-minilm-l6-v2"

    interactions, catalog = load_dataset("ml-100k")
    split = interactions.split("loo")
    tools = make_toolbox(catalog, load_ranker(args.ranker, interactions, split.train), retriever)
    rows = np.sort(np.random.default_rng(0).choice(len(split.test), args.users, replace=False))
    histories = [split.test.histories[i] for i in rows]
    targets = [int(split.test.targets[i]) for i in rows]

    def ranking_session(history):
        memory = Memory(history=history.tolist())

        def reply(text):
            buffer = tools.new_buffer()
            tools.tool_rank(buffer, "history", memory)
            items = tools.answer(buffer, memory, 10)
            memory.shown.update(items)
            return items
        return reply

    def agent_session(planner):
        def start(history):
            agent = InteRecAgent(tools, planner, Memory(history=history.tolist(), context_turns=args.max_turns))
            return lambda text: agent.chat(text).items
        return start

    out = {"benchmark": "agent", "dataset": "ml-100k", "users": args.users, "ranker": args.ranker,
           "retriever": retriever, "k": 10}
    t0 = time.perf_counter()
    out["ranking_alone"] = simulate(ranking_session, tools.table, histories, targets, args.max_turns,
                                    desc="ranking alone")
    rules = CountingPlanner(RulePlanner(tools.specs()))
    out["agent_rules"] = simulate(agent_session(rules), tools.table, histories, targets, args.max_turns,
                                  desc="agent, rule planner")
    out["agent_rules"]["plans"] = rules.plans
    out["rules_seconds"] = round(time.perf_counter() - t0, 1)
    llm = CountingPlanner(make_planner("llm", tools, args.llm))
    out["agent_llm"] = simulate(agent_session(llm), tools.table, histories, targets, args.llm_turns,
                                desc="agent, LLM planner")
    out["agent_llm"].update(plans=llm.plans, valid_plans=llm.valid, valid_plan_rate=round(llm.valid / llm.plans, 4),
                            seconds_per_plan=round(llm.seconds / llm.plans, 3), failures=llm.failures[:5],
                            llm=args.llm, max_new_tokens_bound=llm.planner.grammar.max_tokens)
    out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    out["torch_threads"] = torch.get_num_threads()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
