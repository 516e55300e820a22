"""An LLM that orders candidate items for a prompt: by candidate likelihood, or by generating a list.

Two ways to get an order from a causal LLM (:class:`LLMReranker`):

* ``likelihood`` (default; deterministic, one forward pass per prompt): every candidate's name is
  scored as the continuation of the prompt, ``mean_t log p(token_t | prompt, earlier tokens)``
  (``length_norm = "mean"``; ``"sum"`` for the total), and candidates are sorted by it. The prompt
  and all candidates go through the LLM as **one** packed sequence: a 4-D attention mask lets each
  candidate's tokens see the prompt and their own earlier tokens only, with positions continuing
  after the prompt, so the result equals scoring each ``prompt + candidate`` alone at the cost of
  one prompt pass (needs ``sdpa`` or ``eager`` attention).
* ``generation``: greedy decoding of a free-text answer (:meth:`LLMReranker.generate`), which the
  caller maps back to items with :class:`genrec.evaluation.title_matcher.TitleMatcher`.

Prompts go through the tokenizer's chat template when it has one (SmolLM2-Instruct does), as the
user turn, followed by ``answer_prefix`` as the start of the assistant turn.

Shapes: P prompt tokens, C candidates, T packed tokens, V vocabulary, D width.
"""

from __future__ import annotations

from collections.abc import Sequence

import gin
import numpy as np
import torch
import torch.nn.functional as F

from genrec.llm.finetune import split_causal_lm

__all__ = ["LLMReranker", "SCORINGS"]

SCORINGS = ("likelihood", "generation")


@gin.configurable(denylist=["llm", "tokenizer"])
class LLMReranker:
    """Orders candidates with a causal LLM (see the module docstring).

    Args:
        llm: a transformers causal LM (eval mode is set here).
        tokenizer: its tokenizer.
        scoring: ``likelihood`` or ``generation``.
        length_norm: ``mean`` or ``sum`` of a candidate's token log-probabilities.
        answer_prefix: text that starts the answer, after which candidates are scored or generated.
        max_new_tokens: generation length limit.
        chat_template: wrap the prompt in the tokenizer's chat template when it has one.
    """

    def __init__(self, llm, tokenizer, scoring: str = "likelihood", length_norm: str = "mean",
                 answer_prefix: str = "1. ", max_new_tokens: int = 200, chat_template: bool = True):
        if scoring not in SCORINGS:
            raise ValueError(f"unknown LLMReranker.scoring {scoring!r}; use one of {', '.join(SCORINGS)}")
        if length_norm not in ("mean", "sum"):
            raise ValueError(f"unknown LLMReranker.length_norm {length_norm!r}; use 'mean' or 'sum'")
        self.llm, self.tokenizer = llm.eval(), tokenizer
        self.scoring, self.length_norm, self.answer_prefix = scoring, length_norm, answer_prefix
        self.max_new_tokens = max_new_tokens
        self.chat_template = chat_template and getattr(tokenizer, "chat_template", None) is not None

    def prompt_ids(self, prompt: str) -> list[int]:
        """Token ids of the prompt (chat-wrapped when configured) followed by ``answer_prefix``."""
        if self.chat_template:
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                      add_generation_prompt=True)
        else:
            text = prompt + "\n"
        return self.tokenizer(text + self.answer_prefix, add_special_tokens=not self.chat_template)["input_ids"]

    @torch.no_grad()
    def likelihoods(self, prompt: str, candidates: Sequence[str]) -> np.ndarray:
        """Float64 [C]: each candidate text's (mean or summed) log-probability after the prompt."""
        if not candidates:
            raise ValueError("likelihoods got no candidates")
        prompt_ids = self.prompt_ids(prompt)
        conts = [self.tokenizer(text, add_special_tokens=False)["input_ids"] for text in candidates]
        if any(not c for c in conts):
            raise ValueError(f"a candidate text tokenizes to nothing: {[t for t, c in zip(candidates, conts) if not c]}")
        return self.packed_scores(prompt_ids, conts)

    def packed_scores(self, prompt_ids: Sequence[int], conts: Sequence[Sequence[int]]) -> np.ndarray:
        """Scores of token continuations after ``prompt_ids`` from one packed forward pass."""
        device = next(self.llm.parameters()).device
        p = len(prompt_ids)
        ids = torch.tensor(list(prompt_ids) + [t for c in conts for t in c], device=device)
        segment = torch.cat([torch.zeros(p, dtype=torch.long)]
                            + [torch.full((len(c),), j + 1, dtype=torch.long) for j, c in enumerate(conts)]).to(device)
        positions = torch.cat([torch.arange(p)] + [torch.arange(p, p + len(c)) for c in conts]).to(device)
        index = torch.arange(len(ids), device=device)
        allowed = (index[None, :] <= index[:, None]) & ((segment[None, :] == 0) | (segment[None, :] == segment[:, None]))
        mask = allowed[None, None]  # [1, 1, T, T]
        implementation = getattr(self.llm.config, "_attn_implementation", "sdpa")
        if implementation == "eager":
            dtype = self.llm.get_input_embeddings().weight.dtype
            mask = torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill(~mask, torch.finfo(dtype).min)
        elif implementation != "sdpa":
            raise ValueError(f"likelihood scoring needs 'sdpa' or 'eager' attention (a 4-D mask); the model uses "
                             f"{implementation!r}")
        parts = split_causal_lm(self.llm)
        if parts is None:
            raise ValueError(f"likelihood scoring needs a causal LM with a plain output head, got "
                             f"{type(self.llm).__name__}")
        decoder, head = parts
        hidden = decoder(input_ids=ids[None], attention_mask=mask, position_ids=positions[None],
                         use_cache=False).last_hidden_state[0]  # [T, D]
        predictor, start = [], p  # the row whose output predicts each continuation token
        for c in conts:
            predictor += [p - 1] + list(range(start, start + len(c) - 1))
            start += len(c)
        log_probs = F.log_softmax(head(hidden[predictor]).float(), dim=-1)  # [sum l, V]
        token_lp = log_probs.gather(1, ids[p:, None])[:, 0].cpu().numpy().astype(np.float64)
        scores, start = [], 0
        for c in conts:
            part = token_lp[start:start + len(c)]
            scores.append(part.mean() if self.length_norm == "mean" else part.sum())
            start += len(c)
        return np.array(scores)

    @torch.no_grad()
    def generate(self, prompt: str) -> str:
        """The greedy answer to the prompt (after ``answer_prefix``), special tokens removed."""
        device = next(self.llm.parameters()).device
        ids = torch.tensor([self.prompt_ids(prompt)], device=device)
        out = self.llm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                max_new_tokens=self.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id)
        return self.answer_prefix + self.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
