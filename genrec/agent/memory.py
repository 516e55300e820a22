"""The agent's memory of one conversation: the dialogue, the user's likes and dislikes, what was shown.

InteRecAgent keeps the dialogue and a user profile (likes, dislikes, expected items) beside the
candidate bus. Here: the turns (user text, agent reply), ``liked`` items (added to the history the
ranker sees), ``disliked`` items (never recommended again: the agent drops them from every answer)
and ``shown`` items (not repeated in later turns).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Memory"]


@dataclass
class Memory:
    """What the agent remembers of a conversation.

    Attributes:
        history: the user's past items (item indices), oldest first, the ranker's input.
        turns: ``(user text, agent reply)`` pairs.
        liked, disliked, shown: item indices.
        context_turns: how many recent user turns the planner reads as the request.
    """

    history: list[int] = field(default_factory=list)
    turns: list[tuple[str, str]] = field(default_factory=list)
    liked: list[int] = field(default_factory=list)
    disliked: set[int] = field(default_factory=set)
    shown: set[int] = field(default_factory=set)
    context_turns: int = 3

    def like(self, item: int) -> None:
        self.disliked.discard(item)
        if item not in self.liked:
            self.liked.append(item)

    def dislike(self, item: int) -> None:
        self.disliked.add(item)
        if item in self.liked:
            self.liked.remove(item)

    def request(self, text: str) -> str:
        """The planner's request: the last ``context_turns - 1`` user turns and ``text``."""
        earlier = [user for user, _ in self.turns[-(self.context_turns - 1):]] if self.context_turns > 1 else []
        return " ".join(t if t.rstrip()[-1:] in ".!?" else t.rstrip() + "." for t in earlier + [text] if t.strip())

    def ranking_history(self) -> list[int]:
        """History plus liked items (liked last, as the most recent signal)."""
        return [i for i in self.history if i not in self.liked] + self.liked

    def unwanted(self) -> set[int]:
        return self.disliked | self.shown
