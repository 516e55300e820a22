"""InteRecAgent (Huang et al., arXiv 2308.16505): plan first, then run the tools on a candidate buffer.

One :meth:`InteRecAgent.chat` turn:

1. feedback in the text ("I liked <title>", "I didn't like <title>", "not <title>") updates the
   memory's likes and dislikes (titles looked up in the item table);
2. the planner reads the request (the recent user turns, :meth:`Memory.request`) and writes a plan;
3. the tool box runs it on a fresh buffer (:mod:`genrec.agent.tools`);
4. the top ``k`` buffer items, minus history, dislikes and items shown before, are mapped to titles
   and become the reply; the turn and the shown items go into memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from genrec.agent.memory import Memory
from genrec.agent.tools import ToolBox

__all__ = ["InteRecAgent", "Turn"]

_LIKE = re.compile(r"\bI (?:liked|loved|enjoyed) ([^,.!?]+)", re.IGNORECASE)
_DISLIKE = re.compile(r"\b(?:I (?:didn't|did not|don't|do not) (?:like|want)|I hated?|not) ([A-Z0-9][^,.!?]*)")


@dataclass
class Turn:
    """What one turn did: the plan, the recommended items and the reply text."""

    plan: list[tuple[str, str]]
    items: list[int]
    reply: str


class InteRecAgent:
    """A planner over a tool box, with memory.

    Args:
        tools: the :class:`ToolBox`.
        planner: anything with ``plan(request) -> [(tool, arg), ...]``.
        memory: the conversation memory (the user's history inside).
        k: items per answer.
    """

    def __init__(self, tools: ToolBox, planner, memory: Memory | None = None, k: int = 10):
        self.tools, self.planner, self.memory, self.k = tools, planner, memory or Memory(), k

    def _feedback(self, text: str) -> None:
        for pattern, act in ((_LIKE, self.memory.like), (_DISLIKE, self.memory.dislike)):
            for match in pattern.finditer(text):
                found = self.tools.table.lookup(match[1], limit=1)
                if found:
                    act(found[0])

    def chat(self, text: str) -> Turn:
        self._feedback(text)
        plan = self.planner.plan(self.memory.request(text))
        buffer = self.tools.run(plan, self.memory)
        items = self.tools.answer(buffer, self.memory, self.k)
        lines = [f"{n}. {self.tools.table.describe(i)}" for n, i in enumerate(items, 1)]
        reply = "\n".join(buffer.notes + (["Here is what I found:"] + lines if items else ["I found nothing new."]))
        self.memory.turns.append((text, reply))
        self.memory.shown.update(items)
        return Turn(plan, items, reply)
