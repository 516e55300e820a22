"""Planners: request text -> a plan (list of ``(tool, argument)`` steps) over the agent's tools.

* :class:`LLMPlanner`: a causal LLM (the bundled SmolLM2 by default) writes the plan as JSON,
  greedily, under :class:`~genrec.agent.grammar.PlanGrammar`: at every step only tokens that keep
  the text inside the plan grammar are allowed, so any model, even a random one, yields a
  parseable plan over the real tool names and argument values within ``grammar.max_tokens`` tokens.
  Forced tokens (a single allowed token: the JSON punctuation, the rest of a tool name) are not
  scored one by one: they are fed to the model together at the next real choice (one forward pass
  over several tokens with the KV cache), so a plan costs about one forward pass per choice.
* :class:`RulePlanner`: keyword rules (genre names and synonyms, decades and years, "like <title>",
  quoted titles), for tests and as a reference.
"""

from __future__ import annotations

import json
import re

import gin
import torch

from genrec.agent.grammar import PlanGrammar, parse_plan
from genrec.decoding import cache_argument, output_cache

__all__ = ["LLMPlanner", "RulePlanner"]

_SYNONYMS = {"funny": "Comedy", "comedies": "Comedy", "scary": "Horror", "kids": "Children's", "children": "Children's",
             "family": "Children's", "sci-fi": "Sci-Fi", "science fiction": "Sci-Fi", "romantic": "Romance",
             "cartoon": "Animation", "animated": "Animation", "noir": "Film-Noir", "thrilling": "Thriller",
             "documentaries": "Documentary", "musicals": "Musical", "westerns": "Western", "dramas": "Drama"}

EXAMPLES = (
    ("I'm looking for a Western movie from the 1960s.", [("genre", "Western"), ("decade", "1960s")]),
    ("something like Star Wars", [("like", "Star Wars"), ("rank", "history")]),
    ("a funny movie about dogs", [("genre", "Comedy"), ("search", "dogs")]),
)


class RulePlanner:
    """Keyword rules over the tool specs (see the module docstring)."""

    def __init__(self, specs: dict[str, list[str] | None]):
        self.specs = specs

    def plan(self, request: str) -> list[tuple[str, str]]:
        text = request.lower()
        steps: list[tuple[str, str]] = []
        genres = self.specs.get("genre") or []
        for genre in genres:
            if re.search(rf"(?<![\w-]){re.escape(genre.lower())}(?![\w-])", text):
                steps.append(("genre", genre))
        for word, genre in _SYNONYMS.items():
            if word in text and genre in genres and ("genre", genre) not in steps:
                steps.append(("genre", genre))
        decades = self.specs.get("decade") or []
        for match in re.finditer(r"\b(1[89]|20)?(\d)0'?s\b|\b((?:1[89]|20)\d\d)\b", text):
            decade = f"{match[3][:3]}0s" if match[3] else f"{match[1] or '19'}{match[2]}0s"
            if decade in decades and ("decade", decade) not in steps:
                steps.append(("decade", decade))
        for match in re.finditer(r"\"([^\"]+)\"", request):
            if "title" in self.specs:
                steps.append(("title", match[1]))
        liked = re.search(r"\b(?:like|similar to)\s+([A-Z0-9][^,.!?]*)", request)
        if liked and "like" in self.specs:
            steps.append(("like", liked[1].strip()))
        if not steps and "search" in self.specs:
            steps.append(("search", request.strip()[:200]))
        if "rank" in self.specs:
            steps.append(("rank", "history"))
        return steps


@gin.configurable(denylist=["llm", "tokenizer", "specs"])
class LLMPlanner:
    """A JSON plan from a causal LLM under the plan grammar (see the module docstring).

    Args:
        llm, tokenizer: a transformers causal LM and its tokenizer.
        specs: tool name -> closed argument values or ``None`` (free text).
        max_steps: most steps in a plan.
        max_text_tokens: most tokens in a free-text argument.
    """

    def __init__(self, llm, tokenizer, specs: dict[str, list[str] | None], max_steps: int = 3,
                 max_text_tokens: int = 6):
        self.llm, self.tokenizer, self.specs = llm.eval(), tokenizer, specs
        self.grammar = PlanGrammar(tokenizer, specs, max_steps=max_steps, max_text_tokens=max_text_tokens)
        self.cache_name = cache_argument(llm)
        self.last_text = ""
        self._prefix = None  # (prefix token ids, its KV cache), built on the first plan

    def prompt(self, request: str) -> str:
        """The planner prompt: the tools, then the examples as earlier chat turns (request -> plan), then
        the request (a plain-text transcript for a tokenizer without a chat template)."""
        tools = "; ".join(f"{name} ({'one of ' + ', '.join(values[:6]) + (', ...' if len(values) > 6 else '')})"
                          if values else f"{name} (free text)" for name, values in self.specs.items())
        system = f"You plan tool calls for a movie recommender. Tools: {tools}. Answer with a JSON list of steps."
        shots = [(text, json.dumps([{"tool": t, "arg": a} for t, a in plan if t in self.specs]))
                 for text, plan in EXAMPLES]
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "system", "content": system}]
            for text, plan in shots:
                messages += [{"role": "user", "content": text}, {"role": "assistant", "content": plan}]
            messages.append({"role": "user", "content": request})
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n".join([system] + [f"Request: {t}\nPlan: {p}" for t, p in shots] + [f"Request: {request}\nPlan:"])

    @torch.inference_mode()
    def _start(self, request: str):
        """(KV cache, next-token logits [V], length) after the prompt. The part before the request (the
        instruction and examples) is run once and its cache cropped back to it after every plan."""
        device = next(self.llm.parameters()).device
        ids = self.tokenizer(self.prompt(request), return_tensors="pt", add_special_tokens=False).input_ids.to(device)
        if self._prefix is None:
            marker = "\u0000"
            head = self.prompt(marker).split(marker)[0]
            prefix = self.tokenizer(head, return_tensors="pt", add_special_tokens=False).input_ids.to(device)
            out = self.llm(input_ids=prefix[:, :-1], use_cache=True)  # the last prefix token may merge with the request
            self._prefix = (prefix[0, :-1], output_cache(out))
        prefix, cache = self._prefix
        n = len(prefix)
        if ids.shape[1] <= n or not torch.equal(ids[0, :n], prefix) or not hasattr(cache, "crop"):
            out = self.llm(input_ids=ids, use_cache=True)
            return output_cache(out), out.logits[0, -1].float(), ids.shape[1]
        extra = cache.get_seq_length() - n
        if extra > 0:
            cache.crop(-extra)  # transformers >= 5: a negative count of tokens to remove
        out = self.llm(input_ids=ids[:, n:], position_ids=torch.arange(n, ids.shape[1], device=device)[None],
                       use_cache=True, **{self.cache_name: cache})
        return output_cache(out), out.logits[0, -1].float(), ids.shape[1]

    @torch.inference_mode()
    def generate(self, request: str) -> list[int]:
        """The plan's token ids (EOS excluded), greedy under the grammar."""
        device = next(self.llm.parameters()).device
        cache, logits, length = self._start(request)
        state, tokens, pending = self.grammar.replay([]), [], []
        for _ in range(self.grammar.max_tokens):
            allowed = self.grammar.allowed(state, logits.shape[-1]).to(device)
            if int(allowed.sum()) == 1:
                token = int(allowed.nonzero()[0, 0])
            else:
                if pending:
                    step = torch.tensor([pending], device=device)
                    positions = torch.arange(length, length + len(pending), device=device)[None]
                    out = self.llm(input_ids=step, position_ids=positions, use_cache=True, **{self.cache_name: cache})
                    cache, logits, length, pending = output_cache(out), out.logits[0, -1].float(), length + len(pending), []
                token = int(logits.masked_fill(~allowed, float("-inf")).argmax())
            state = self.grammar.advance(state, token)
            if state.stage == "done":
                return tokens
            tokens.append(token)
            pending.append(token)
        raise RuntimeError(f"the plan grammar did not end within {self.grammar.max_tokens} tokens")  # unreachable

    def plan(self, request: str) -> list[tuple[str, str]]:
        self.last_text = self.tokenizer.decode(self.generate(request))
        return parse_plan(self.last_text, self.specs)
