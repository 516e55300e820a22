"""A simulated user who knows a hidden target item, for evaluating conversational recommendation.

As in InteRecAgent's evaluation (a GPT-4 user simulator that knows the target and never names it),
but rule-written so it runs offline and reproducibly: turn t reveals hint t of the target, and the
conversation ends when the target is among the ``k`` items the recommender answers with (a hit) or
after ``max_turns``. Hints, in order: one genre and the decade; the other genres; the year; a word
of the title. Later turns say only the new hint ("Also ..."), so an agent must remember the earlier
ones (its dialogue memory).

Metrics over users (:func:`simulate`): ``one_turn_hit`` (hit at turn 1), ``hit`` (hit within
``max_turns``), ``avg_turns`` (turns used, a miss counting ``max_turns``, as InteRecAgent's AT).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence

import numpy as np

from genrec.agent.items import ItemTable
from genrec.progress import progress

__all__ = ["hints", "simulate"]

_STOP = {"the", "a", "an", "of", "and", "in", "on", "to", "for", "with", "la", "le", "les", "de", "il"}


def hints(table: ItemTable, target: int, rng: random.Random) -> list[str]:
    """The simulated user's utterances for ``target``, one per turn."""
    _, year, genres = table.db.execute("SELECT title, year, genres FROM items WHERE id = ?", (target,)).fetchone()
    genre_list = [g for g in genres.split(", ") if g and g != "unknown"]
    rng.shuffle(genre_list)
    decade = f"{str(year)[:3]}0s" if year else ""
    first = f"I'm looking for a {genre_list[0]} movie" if genre_list else "I'm looking for a movie"
    out = [first + (f" from the {decade}." if decade else ".")]
    if len(genre_list) > 1:
        out.append(f"Also, it should be {' and '.join(genre_list[1:])}.")
    if year:
        out.append(f"It came out in {year}.")
    words = [w for w in re.findall(r"[A-Za-z']{3,}", table.title(target)) if w.lower() not in _STOP]
    if words:
        out.append(f'The title has the word "{rng.choice(words)}" in it.')
    return out


def simulate(recommend_session: Callable[[np.ndarray], Callable[[str], list[int]]], table: ItemTable,
             histories: Sequence[np.ndarray], targets: Sequence[int], max_turns: int = 5, seed: int = 0,
             desc: str = "simulated users") -> dict[str, float]:
    """Runs one conversation per (history, target).

    Args:
        recommend_session: ``recommend_session(history)`` starts a conversation and returns
            ``reply(utterance) -> item indices`` (the recommended list of that turn).
        table: the item table (hints come from it).
        histories, targets: the users.
        max_turns: turns before giving up; hints beyond the last repeat the last one.
    """
    rng = random.Random(seed)
    one_turn, hits, turns = [], [], []
    for history, target in progress(list(zip(histories, targets)), desc=desc, unit="user"):
        utterances = hints(table, int(target), rng)
        reply = recommend_session(np.asarray(history))
        used, hit = max_turns, False
        for t in range(max_turns):
            items = reply(utterances[min(t, len(utterances) - 1)])
            if int(target) in items:
                used, hit = t + 1, True
                break
        one_turn.append(float(hit and used == 1))
        hits.append(float(hit))
        turns.append(used)
    return {"one_turn_hit": round(float(np.mean(one_turn)), 4), "hit": round(float(np.mean(hits)), 4),
            "avg_turns": round(float(np.mean(turns)), 3), "users": len(targets), "max_turns": max_turns}
