"""InteRecAgent: a plan-first recommender agent over a shared candidate buffer.

- :mod:`~genrec.agent.items`: the catalogue as an sqlite table (look-up, hard filters);
- :mod:`~genrec.agent.tools`: the tools and the candidate buffer; ranking by any genrec recommender;
- :mod:`~genrec.agent.memory`: dialogue, likes, dislikes, shown items;
- :mod:`~genrec.agent.grammar`: the JSON plan grammar enforced token by token (tries + logits processor);
- :mod:`~genrec.agent.planner`: the LLM planner under that grammar and a rule planner;
- :mod:`~genrec.agent.agent`: one chat turn; :mod:`~genrec.agent.simulator`: a simulated user;
- ``python -m genrec.agent``: the terminal chat.
"""

from genrec.agent.agent import InteRecAgent, Turn
from genrec.agent.grammar import PlanGrammar, PlanLogitsProcessor, parse_plan
from genrec.agent.items import ItemTable
from genrec.agent.memory import Memory
from genrec.agent.planner import LLMPlanner, RulePlanner
from genrec.agent.tools import CandidateBuffer, ToolBox

__all__ = ["CandidateBuffer", "InteRecAgent", "ItemTable", "LLMPlanner", "Memory", "PlanGrammar",
           "PlanLogitsProcessor", "RulePlanner", "ToolBox", "Turn", "parse_plan"]
