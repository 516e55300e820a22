"""A JSON plan grammar enforced token by token: every generation is a parseable plan over the tools.

A plan is a JSON list of 1..``max_steps`` steps over the agent's tools::

    [{"tool": "genre", "arg": "Comedy"}, {"tool": "rank", "arg": "history"}]

The grammar is compiled into a few prefix tries (:class:`~genrec.decoding.PrefixTrie`) over token
ids, walked one token at a time as in trie-constrained item decoding:

* the opening ``[{"tool": "``: a trie of one sequence (a forced literal);
* the tool: a trie over ``<name>", "arg": "`` for every tool name, so a name is complete only when
  the closing quote is generated (no name can stop inside another);
* the argument: for a tool with a closed set of values (genres, decades), a trie over
  ``<value>"}``; for a free-text tool, up to ``max_text_tokens`` tokens whose text is printable and
  holds no ``"`` or ``\\`` (so the string stays valid JSON), then the first token of ``"}``, or
  that token forced once the budget is spent;
* then ``, {"tool": "`` (another step, while fewer than ``max_steps``) or ``]``; then only EOS.

:class:`PlanGrammar` holds the tries and advances a :class:`GrammarState` by one token;
:meth:`PlanGrammar.allowed` gives the boolean mask of the next tokens. Every state allows at least
one token and the grammar is finite (:attr:`PlanGrammar.max_tokens` bounds a plan), so a decoder
that always picks an allowed token ends with a parseable plan within that many tokens, whatever the
model's scores. :class:`PlanLogitsProcessor` is the same constraint as a transformers
``LogitsProcessor`` for ``generate``. V: vocabulary width of the scores.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import torch
from transformers import LogitsProcessor

from genrec.decoding import PrefixTrie

__all__ = ["GrammarState", "PlanGrammar", "PlanLogitsProcessor", "parse_plan"]

OPEN, STEP_SEP, TOOL_END, ARG_END, CLOSE = '[{"tool": "', ', {"tool": "', '", "arg": "', '"}', "]"


@dataclass(frozen=True)
class GrammarState:
    """Where a generation is in the plan grammar.

    Attributes:
        stage: ``open``, ``tool``, ``arg`` (a closed set), ``text`` (free text), ``close_text``
            (the ``"}`` after free text), ``next``, ``end`` (only EOS) or ``done``.
        node: node of the stage's trie (unused in ``text``).
        tool: index of the step's tool.
        steps: complete steps so far.
        text_tokens: free-text tokens so far in this argument.
    """

    stage: str = "open"
    node: int = 0
    tool: int = -1
    steps: int = 0
    text_tokens: int = 0


def _trie(tokenizer, texts: Sequence[str]) -> PrefixTrie:
    return PrefixTrie([tokenizer.encode(text, add_special_tokens=False) for text in texts])


class PlanGrammar:
    """The plan grammar of a set of tools for one tokenizer.

    Args:
        tokenizer: the planner LLM's tokenizer (needs an EOS token).
        tools: tool name -> allowed argument values (a non-empty list) or ``None`` (free text).
        max_steps: most steps in a plan.
        max_text_tokens: most tokens in a free-text argument.
    """

    def __init__(self, tokenizer, tools: Mapping[str, Sequence[str] | None], max_steps: int = 3,
                 max_text_tokens: int = 8):
        if not tools or max_steps < 1 or max_text_tokens < 1:
            raise ValueError("PlanGrammar needs at least one tool, max_steps >= 1 and max_text_tokens >= 1")
        for name, values in tools.items():
            bad = [v for v in (values or []) + [name] if not v or '"' in v or "\\" in v]
            if bad or (values is not None and not values):
                raise ValueError(f"tool {name!r}: names and argument values must be non-empty strings without "
                                 f"quotes or backslashes, and a closed set needs values (got {bad or values!r})")
        if tokenizer.eos_token_id is None:
            raise ValueError("PlanGrammar needs a tokenizer with an EOS token")
        self.tool_names = list(tools)
        self.tool_values = [list(v) if v is not None else None for v in tools.values()]
        self.max_steps, self.max_text_tokens = max_steps, max_text_tokens
        self.eos = tokenizer.eos_token_id
        self.vocab_size = len(tokenizer)
        self.open = _trie(tokenizer, [OPEN])
        self.tool = _trie(tokenizer, [name + TOOL_END for name in self.tool_names])
        self.args = [_trie(tokenizer, [v + ARG_END for v in values]) if values is not None else None
                     for values in self.tool_values]
        self.close_text = _trie(tokenizer, [ARG_END])
        self.next = {True: _trie(tokenizer, [STEP_SEP, CLOSE]), False: _trie(tokenizer, [CLOSE])}
        self.next_values = {True: [STEP_SEP, CLOSE], False: [CLOSE]}
        self.text_ok = self._text_tokens(tokenizer)
        self.close_first = int(self.close_text.child_token[0])
        self.max_tokens = self.open.max_depth + max_steps * (
            self.tool.max_depth + max(max_text_tokens + self.close_text.max_depth if a is None else a.max_depth
                                      for a in self.args) + self.next[True].max_depth) + 1

    def _text_tokens(self, tokenizer) -> torch.Tensor:
        """BoolTensor [V]: tokens allowed inside a free-text argument (printable, no quote or backslash)."""
        special = set(tokenizer.all_special_ids)
        ok = torch.zeros(self.vocab_size, dtype=torch.bool)
        pieces = tokenizer.batch_decode([[i] for i in range(self.vocab_size)])
        for i, text in enumerate(pieces):
            ok[i] = (i not in special and bool(text) and text.isprintable() and text.isascii()
                     and '"' not in text and "\\" not in text)
        if not ok.any():
            raise ValueError("the tokenizer has no token usable inside a JSON string")
        return ok

    def _trie_of(self, state: GrammarState) -> PrefixTrie:
        if state.stage == "open":
            return self.open
        if state.stage == "tool":
            return self.tool
        if state.stage == "arg":
            return self.args[state.tool]
        if state.stage == "close_text":
            return self.close_text
        return self.next[state.steps < self.max_steps]

    def allowed(self, state: GrammarState, width: int | None = None) -> torch.Tensor:
        """BoolTensor [width]: the tokens that keep the generation inside the grammar (never empty)."""
        width = width or self.vocab_size
        mask = torch.zeros(width, dtype=torch.bool)
        if state.stage in ("end", "done"):
            mask[self.eos] = True
        elif state.stage == "text":
            if state.text_tokens < self.max_text_tokens:
                mask[:self.vocab_size] = self.text_ok
            if state.text_tokens > 0 or state.text_tokens >= self.max_text_tokens:
                mask[self.close_first] = True
            if not mask.any():
                mask[self.close_first] = True
        else:
            mask |= self._trie_of(state).allowed_mask(torch.tensor([state.node]), width)[0]
        return mask

    def advance(self, state: GrammarState, token: int) -> GrammarState:
        """The state after ``token``; ValueError when the token is outside the grammar."""
        if state.stage in ("end", "done"):
            if token != self.eos:
                raise ValueError(f"token {token} after a complete plan; only EOS ({self.eos}) may follow")
            return replace(state, stage="done")
        if state.stage == "text":
            if token == self.close_first:
                return self._after_trie(replace(state, stage="close_text", node=0), token)
            if token >= self.vocab_size or not self.text_ok[token] or state.text_tokens >= self.max_text_tokens:
                raise ValueError(f"token {token} cannot continue a free-text argument")
            return replace(state, text_tokens=state.text_tokens + 1)
        return self._after_trie(state, token)

    def _after_trie(self, state: GrammarState, token: int) -> GrammarState:
        trie = self._trie_of(state)
        node = int(trie.next_nodes(torch.tensor([state.node]), torch.tensor([token]))[0])
        if node < 0:
            raise ValueError(f"token {token} leaves the plan grammar at stage {state.stage!r}")
        if not bool(trie.is_leaf(torch.tensor([node]))[0]):
            return replace(state, node=node)
        value = int(trie.values(torch.tensor([node]))[0])
        if state.stage == "open":
            return replace(state, stage="tool", node=0)
        if state.stage == "tool":
            stage = "arg" if self.tool_values[value] is not None else "text"
            return replace(state, stage=stage, node=0, tool=value, text_tokens=0)
        if state.stage in ("arg", "close_text"):
            return replace(state, stage="next", node=0, steps=state.steps + 1)
        more = self.next_values[state.steps < self.max_steps][value] == STEP_SEP
        return replace(state, stage="tool" if more else "end", node=0)

    def replay(self, tokens: Sequence[int]) -> GrammarState:
        """The state after a sequence of generated tokens."""
        state = GrammarState()
        for token in tokens:
            state = self.advance(state, int(token))
        return state


class PlanLogitsProcessor(LogitsProcessor):
    """:class:`PlanGrammar` as a transformers ``LogitsProcessor``: scores of tokens outside the grammar
    become -inf. Rows are replayed from their generated tokens (after ``prompt_length`` columns), with
    the last state of each row kept so a step costs one token per row."""

    def __init__(self, grammar: PlanGrammar, prompt_length: int):
        self.grammar, self.prompt_length = grammar, prompt_length
        self._states: dict[int, tuple[int, GrammarState]] = {}

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        masks = []
        for row, ids in enumerate(input_ids[:, self.prompt_length:].tolist()):
            seen, state = self._states.get(row, (0, GrammarState()))
            if seen > len(ids):
                seen, state = 0, GrammarState()
            for token in ids[seen:]:
                state = self.grammar.advance(state, token)
            self._states[row] = (len(ids), state)
            masks.append(self.grammar.allowed(state, scores.shape[-1]))
        mask = torch.stack(masks).to(scores.device)
        return scores.masked_fill(~mask, float("-inf"))


def parse_plan(text: str, tools: Mapping[str, Sequence[str] | None]) -> list[tuple[str, str]]:
    """``[(tool, arg), ...]`` of a plan's JSON text; ValueError naming what is wrong when it is not a valid plan."""
    try:
        steps = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"plan is not JSON ({err}): {text!r}") from None
    if not isinstance(steps, list) or not steps:
        raise ValueError(f"plan must be a non-empty JSON list of steps, got {text!r}")
    out = []
    for step in steps:
        if not isinstance(step, dict) or set(step) != {"tool", "arg"} or not isinstance(step["arg"], str):
            raise ValueError(f"plan step must be {{'tool': name, 'arg': string}}, got {step!r}")
        if step["tool"] not in tools:
            raise ValueError(f"plan step names unknown tool {step['tool']!r}; tools: {', '.join(tools)}")
        values = tools[step["tool"]]
        if values is not None and step["arg"] not in values:
            raise ValueError(f"tool {step['tool']!r} got {step['arg']!r}; it takes one of {', '.join(values)}")
        out.append((step["tool"], step["arg"]))
    return out
